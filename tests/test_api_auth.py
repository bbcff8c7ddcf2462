"""Accounts and sessions through the HTTP stack: argon2id, lockout, opaque
tokens stored only as SHA-256, expiry, logout, refresh, request ids, audit."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from tests.api_helpers import PASSWORD, error_code


def test_register_stores_an_argon2id_hash_and_never_returns_the_password(api, db):
    response = api.post(
        "/auth/register",
        json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201
    assert response.json["username"] == "alice"
    uuid.UUID(response.json["uuid"])
    assert PASSWORD not in response.get_data(as_text=True)
    assert "password_hash" not in response.json
    (stored,) = db.execute("SELECT password_hash FROM users WHERE username = 'alice'").fetchone()
    assert stored.startswith("$argon2id$")


def test_a_taken_username_or_email_is_a_conflict(api):
    api.register("alice")
    for body in (
        {"username": "alice", "email": "new@example.com"},
        {"username": "alice2", "email": "ALICE@example.com"},
    ):
        response = api.post("/auth/register", json={**body, "password": PASSWORD})
        assert response.status_code == 409
        assert set(response.json["error"]) == {"code", "message", "fields"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"username": "bob", "email": "bob@example.com", "password": 12345678}', 422),
        (b'{"username": "a b", "email": "bob@example.com", "password": "long enough"}', 422),
        (b'{"username": "bob", "email": "not-an-email", "password": "long enough"}', 422),
        (b'{"username": "bob", "email": "bob@example.com", "password": "short"}', 422),
        (
            b'{"username": "bob", "email": "bob@example.com", "password": "long enough", "x": 1}',
            422,
        ),
        (b'{"username": "bo\\u0000b", "email": "bob@example.com", "password": "long enough"}', 422),
    ],
)
def test_bad_registration_input_is_a_4xx_and_writes_nothing(api, db, body, status):
    response = api.post("/auth/register", data=body, content_type="application/json")
    assert response.status_code == status
    assert response.json["error"]["code"] in {"malformed_json", "validation_failed"}
    assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_validation_errors_name_the_field(api):
    response = api.post("/auth/register", json={"username": "bob", "email": "bob@example.com"})
    assert response.status_code == 422
    assert "password" in response.json["error"]["fields"]


def test_login_by_username_or_email_returns_opaque_tokens_stored_only_as_sha256(api, db):
    api.register("alice")
    for login in ("alice", "alice@example.com"):
        response = api.post("/auth/login", json={"login": login, "password": PASSWORD})
        assert response.status_code == 200
        assert response.json["user"]["username"] == "alice"
    access, refresh = response.json["access_token"], response.json["refresh_token"]
    hashes = {row[0] for row in db.execute("SELECT token_hash FROM user_sessions")}
    assert hashlib.sha256(access.encode()).hexdigest() in hashes
    assert hashlib.sha256(refresh.encode()).hexdigest() in hashes
    dump = str(db.execute("SELECT * FROM user_sessions").fetchall())
    assert access not in dump
    assert refresh not in dump


def test_login_success_and_failure_are_audited_with_request_context(api, db):
    api.register("alice")
    request_id = str(uuid.uuid4())
    api.post(
        "/auth/login",
        json={"login": "alice", "password": "wrong password"},
        headers={"X-Request-ID": request_id, "User-Agent": "pytest-agent"},
    )
    api.post("/auth/login", json={"login": "alice", "password": PASSWORD})
    events = db.execute(
        "SELECT event_type, host(ip_address), user_agent, request_id::text FROM audit_logs "
        "ORDER BY id"
    ).fetchall()
    assert [e[0] for e in events] == ["login_succeeded", "login_failed", "login_succeeded"]
    failed = events[1]
    assert failed[1:] == ("127.0.0.1", "pytest-agent", request_id)


def test_five_failures_lock_the_account_even_against_the_right_password(api, db):
    api.register("alice")
    statuses = [
        api.post("/auth/login", json={"login": "alice", "password": "wrong!!!"}).status_code
        for _ in range(5)
    ]
    assert statuses == [401, 401, 401, 401, 423]
    locked = api.post("/auth/login", json={"login": "alice", "password": PASSWORD})
    assert locked.status_code == 423
    assert "locked_until" in locked.json["error"]["fields"]
    assert db.execute("SELECT locked_until > now() FROM users").fetchone() == (True,)
    assert db.execute(
        "SELECT count(*) FROM audit_logs WHERE event_type = 'account_locked'"
    ).fetchone() == (1,)


def test_an_expired_lock_lets_the_right_password_in(api, db):
    api.register("alice")
    db.execute("UPDATE users SET locked_until = now() - interval '1 second'")
    assert api.post("/auth/login", json={"login": "alice", "password": PASSWORD}).status_code == 200


def test_unknown_login_is_401_like_a_wrong_password(api):
    response = api.post("/auth/login", json={"login": "nobody", "password": PASSWORD})
    assert response.status_code == 401
    assert error_code(response) == "invalid_credentials"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-real-token", "Basic abc"])
def test_endpoints_need_a_valid_bearer_token(api, header):
    headers = {"Authorization": header} if header else {}
    response = api.post("/rooms", json={"name": "x"}, headers=headers)
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


def test_an_expired_session_is_refused(api, db):
    alice = api.register("alice")
    db.execute(
        "UPDATE user_sessions SET created_at = now() - interval '2 hours', "
        "expires_at = now() - interval '1 second'"
    )
    assert api.post("/rooms", alice, json={"name": "x"}).status_code == 401


def test_logout_deactivates_the_session_and_is_audited(api, db):
    alice = api.register("alice")
    assert api.post("/auth/logout", alice).status_code == 204
    assert api.post("/rooms", alice, json={"name": "x"}).status_code == 401
    refreshed = api.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert refreshed.status_code == 401
    assert db.execute("SELECT count(*) FROM audit_logs WHERE event_type = 'logout'").fetchone() == (
        1,
    )


def test_refresh_rotates_both_tokens(api):
    alice = api.register("alice")
    response = api.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert response.status_code == 200
    new_access = response.json["access_token"]
    assert (
        api.post(
            "/rooms", json={"name": "x"}, headers={"Authorization": f"Bearer {new_access}"}
        ).status_code
        == 201
    )
    assert api.post("/rooms", alice, json={"name": "x"}).status_code == 401
    reused = api.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert reused.status_code == 401


def test_a_refresh_token_is_not_an_access_token(api):
    alice = api.register("alice")
    response = api.post(
        "/rooms", json={"name": "x"}, headers={"Authorization": f"Bearer {alice.refresh_token}"}
    )
    assert response.status_code == 401


def test_request_id_is_echoed_when_it_is_a_uuid_and_replaced_otherwise(api):
    mine = str(uuid.uuid4())
    echoed = api.post(
        "/auth/login", json={"login": "x", "password": "y"}, headers={"X-Request-ID": mine}
    )
    assert echoed.headers["X-Request-ID"] == mine
    replaced = api.post(
        "/auth/login",
        json={"login": "x", "password": "y"},
        headers={"X-Request-ID": "'; DROP TABLE users"},
    )
    assert str(uuid.UUID(replaced.headers["X-Request-ID"])) != mine


def test_an_anonymous_caller_learns_nothing_about_validation(api):
    response = api.post("/rooms", json={"name": 5, "bogus": True})
    assert response.status_code == 401
    assert response.json["error"]["fields"] == {}


def test_concurrent_registrations_of_one_email_in_different_cases_make_one_account(app, db):
    from concurrent.futures import ThreadPoolExecutor

    from tests.api_helpers import ApiClient

    emails = ["dup@example.com", "Dup@example.com", "DUP@example.com", "dUp@EXAMPLE.com"]

    def register(numbered):
        number, email = numbered
        return ApiClient(app.test_client()).post(
            "/auth/register",
            json={"username": f"racer{number}", "email": email, "password": PASSWORD},
        )

    with ThreadPoolExecutor(max_workers=len(emails)) as pool:
        responses = list(pool.map(register, enumerate(emails)))
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert {r.json["error"]["code"] for r in responses if r.status_code == 409} == {
        "account_exists"
    }
    assert db.execute("SELECT count(*) FROM users").fetchone() == (1,)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("bob", "password"),  # the most common, and short
        ("bob", " " * 8),
        ("bob", " " * 12),  # long enough, and still nothing
        ("bob", "password1234"),
        ("wonderland42", "wonderland42"),  # the username
        ("wonderland42", "WONDERLAND42"),
        ("wonderland42", "wonderland42@example.com"),  # the email
    ],
)
def test_weak_passwords_are_refused_at_register_naming_the_field(api, db, username, password):
    response = api.post(
        "/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert response.status_code == 422
    assert error_code(response) == "validation_failed"
    assert response.json["error"]["fields"]["password"].startswith("Password ")
    assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_the_minimum_length_is_a_setting(api, environment):
    environment(PASSWORD_MIN_LENGTH="30")
    response = api.post(
        "/auth/register",
        json={"username": "bob", "email": "bob@example.com", "password": PASSWORD},
    )
    assert response.status_code == 422
    assert "30" in response.json["error"]["fields"]["password"]


def test_usernames_are_unique_whatever_their_case_and_log_in_in_any_case(api, db):
    api.register("alice")
    taken = api.post(
        "/auth/register",
        json={"username": "Alice", "email": "other@example.com", "password": PASSWORD},
    )
    assert taken.status_code == 409
    assert error_code(taken) == "account_exists"
    assert api.post("/auth/login", json={"login": "ALICE", "password": PASSWORD}).status_code == 200
    with pytest.raises(Exception, match="idx_users_username_lower"):
        db.execute(
            "INSERT INTO users (username, email, password_hash) VALUES ('aLiCe', 'x@example.com', 'x')"
        )


def test_a_deactivated_account_answers_exactly_as_a_wrong_password(api, db):
    api.register("alice")
    wrong = api.post("/auth/login", json={"login": "alice", "password": "not the password"})
    db.execute("UPDATE users SET is_active = false, failed_login_attempts = 0")
    deactivated = api.post("/auth/login", json={"login": "alice", "password": PASSWORD})
    unknown = api.post("/auth/login", json={"login": "nobody", "password": PASSWORD})
    assert wrong.status_code == deactivated.status_code == unknown.status_code == 401
    assert wrong.json == deactivated.json == unknown.json
    # Counted like a wrong password too, so that it locks like one.
    assert db.execute("SELECT failed_login_attempts FROM users").fetchone() == (1,)
