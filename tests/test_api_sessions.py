"""Sessions through the HTTP stack: the list and its device details, ending
one, logging out everywhere, password change, refresh-token reuse revoking
the family, and the absolute lifetime."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.api_helpers import PASSWORD, User, error_code

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


def log_in(api, user: User, agent: str = "pytest", password: str = PASSWORD) -> User:
    """Another session (family) of `user`."""
    tokens = api.post(
        "/auth/login",
        json={"login": user.username, "password": password},
        headers={"User-Agent": agent},
    )
    assert tokens.status_code == 200, tokens.json
    return User(user.id, user.username, tokens.json["access_token"], tokens.json["refresh_token"])


def works(api, user: User) -> bool:
    return api.get("/auth/sessions", user).status_code == 200


def refreshes(api, user: User) -> bool:
    return api.post("/auth/refresh", json={"refresh_token": user.refresh_token}).status_code == 200


def test_the_list_shows_each_login_once_with_its_parsed_device(api):
    alice = api.register("alice")
    laptop = log_in(api, alice, FIREFOX)
    log_in(api, alice, IPHONE)
    listed = api.get("/auth/sessions", laptop)
    assert listed.status_code == 200
    sessions = listed.json["sessions"]
    assert len(sessions) == 3  # register's login, the laptop, the phone
    assert [s["current"] for s in sessions].count(True) == 1
    current = next(s for s in sessions if s["current"])
    assert current["user_agent"] == FIREFOX
    assert current["device_info"]["browser"] == "Firefox"
    assert current["device_info"]["os"] == "Windows"
    assert current["ip_address"] == "127.0.0.1"
    assert current["location_info"] == {"network": "loopback"}
    phone = next(s for s in sessions if s["user_agent"] == IPHONE)
    assert phone["device_info"]["device"] == "iPhone"
    assert phone["device_info"]["os"] == "iOS"


def test_a_refresh_stays_the_same_session_in_the_list(api):
    alice = api.register("alice")
    assert refreshes(api, alice)
    other = log_in(api, alice)
    assert len(api.get("/auth/sessions", other).json["sessions"]) == 2


def test_last_activity_is_written_at_most_once_a_minute(api, db):
    alice = api.register("alice")
    db.execute("UPDATE user_sessions SET last_activity_at = now() - interval '5 minutes'")
    before = datetime.now(UTC) - timedelta(minutes=1)
    first = api.get("/auth/sessions", alice).json["sessions"][0]["last_activity_at"]
    assert datetime.fromisoformat(first) > before
    again = api.get("/auth/sessions", alice).json["sessions"][0]["last_activity_at"]
    assert again == first


def test_ending_one_session_kills_its_tokens_and_leaves_the_others(api, db):
    alice = api.register("alice")
    phone = log_in(api, alice, IPHONE)
    target = next(
        s["id"] for s in api.get("/auth/sessions", alice).json["sessions"] if not s["current"]
    )
    assert api.delete(f"/auth/sessions/{target}", alice).status_code == 204
    assert not works(api, phone)
    assert not refreshes(api, phone)
    assert works(api, alice)
    assert db.execute(
        "SELECT count(*) FROM audit_logs WHERE event_type = 'session_revoked'"
    ).fetchone() == (1,)


def test_someone_elses_session_answers_like_a_missing_one(api):
    alice, bob = api.register("alice"), api.register("bob")
    bobs = api.get("/auth/sessions", bob).json["sessions"][0]["id"]
    theirs = api.delete(f"/auth/sessions/{bobs}", alice)
    missing = api.delete(f"/auth/sessions/{uuid.uuid4()}", alice)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json == missing.json
    assert works(api, bob)


def test_logout_all_ends_every_session_this_one_included(api, db):
    alice = api.register("alice")
    phone = log_in(api, alice, IPHONE)
    assert api.post("/auth/logout-all", alice).status_code == 204
    for user in (alice, phone):
        assert not works(api, user)
        assert not refreshes(api, user)
    assert db.execute(
        "SELECT event_data->>'revoked_sessions' FROM audit_logs WHERE event_type = 'logout_all'"
    ).fetchone() == ("4",)


def test_a_password_change_keeps_this_session_and_ends_the_others(api, db):
    alice = api.register("alice")
    phone = log_in(api, alice, IPHONE)
    new = "a brand new passphrase"
    changed = api.post(
        "/auth/password", alice, json={"current_password": PASSWORD, "new_password": new}
    )
    assert changed.status_code == 204
    assert works(api, alice)
    assert not works(api, phone)
    assert not refreshes(api, phone)
    assert api.post("/auth/login", json={"login": "alice", "password": PASSWORD}).status_code == 401
    log_in(api, alice, password=new)
    assert db.execute(
        "SELECT count(*) FROM audit_logs WHERE event_type = 'password_changed'"
    ).fetchone() == (1,)


def test_a_wrong_current_password_changes_nothing_and_counts_toward_the_lockout(api, db):
    alice = api.register("alice")
    body = {"current_password": "not my password", "new_password": "a brand new passphrase"}
    refused = api.post("/auth/password", alice, json=body)
    assert refused.status_code == 403
    assert error_code(refused) == "invalid_password"
    assert db.execute("SELECT failed_login_attempts FROM users").fetchone() == (1,)
    assert api.post("/auth/login", json={"login": "alice", "password": PASSWORD}).status_code == 200


def test_a_weak_new_password_is_refused_naming_the_field(api):
    alice = api.register("alice")
    for weak in ("password", "alice@example.com", "aaaaaaaaaaaa", PASSWORD):
        refused = api.post(
            "/auth/password", alice, json={"current_password": PASSWORD, "new_password": weak}
        )
        assert refused.status_code == 422, weak
        assert "new_password" in refused.json["error"]["fields"], weak


def test_a_reused_refresh_token_revokes_its_whole_family_and_is_audited(api, db):
    alice = api.register("alice")
    other = log_in(api, alice)
    rotated = api.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert rotated.status_code == 200
    heir = User(alice.id, "alice", rotated.json["access_token"], rotated.json["refresh_token"])
    replayed = api.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert replayed.status_code == 401
    assert not works(api, heir)
    assert not refreshes(api, heir)
    assert works(api, other)  # another login: another family
    # The replay revoked the heir's two rows; the heir's own refresh token,
    # tried after, is a reuse too, with nothing left to revoke.
    events = db.execute(
        "SELECT severity::text, event_data->>'revoked_sessions' FROM audit_logs"
        " WHERE event_type = 'refresh_token_reused' ORDER BY id"
    ).fetchall()
    assert events == [("warning", "2"), ("warning", "0")]


def test_refreshing_never_extends_a_family_past_its_login(api, db):
    alice = api.register("alice")
    db.execute("UPDATE user_sessions SET authenticated_at = now() - interval '29 days'")
    refreshed = api.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert refreshed.status_code == 200
    end = datetime.now(UTC) + timedelta(days=1)
    assert datetime.fromisoformat(refreshed.json["refresh_expires_at"]) <= end
    assert datetime.fromisoformat(refreshed.json["expires_at"]) <= end


def test_a_family_past_its_absolute_lifetime_is_refused(api, db, environment):
    environment(SESSION_ABSOLUTE_LIFETIME_DAYS="1")
    alice = api.register("alice")
    assert works(api, alice)
    db.execute("UPDATE user_sessions SET authenticated_at = now() - interval '25 hours'")
    assert not works(api, alice)
    assert not refreshes(api, alice)


def test_session_and_token_responses_are_never_cached(api):
    alice = api.register("alice")
    responses = [
        api.post("/auth/login", json={"login": "alice", "password": PASSWORD}),
        api.post("/auth/login", json={"login": "alice", "password": "wrong one!"}),
        api.post("/auth/refresh", json={"refresh_token": alice.refresh_token}),
        api.get("/auth/sessions", alice),
        api.post(
            "/auth/register",
            json={"username": "bob", "email": "bob@example.com", "password": PASSWORD},
        ),
        api.post("/auth/2fa/setup", alice),
    ]
    for response in responses:
        assert response.headers["Cache-Control"] == "no-store", response.request.path
