"""2FA through the HTTP stack: setup without enabling, enable with backup
codes shown once and stored hashed, login needing a code, no replay,
backup codes used once, wrong codes counting toward the lockout, disable,
and no secret ever stored in the clear."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from cryptography.fernet import Fernet

from tests.api_helpers import PASSWORD, error_code


def totp_code(secret: str, step_offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * step_offset))


def wrong_code(secret: str) -> str:
    """A 6-digit code valid for no step near now."""
    near = {totp_code(secret, offset) for offset in range(-3, 4)}
    return next(code for code in (f"{n:06d}" for n in range(10**6)) if code not in near)


def login(api, otp: str | None = None, password: str = PASSWORD):
    body = {"login": "alice", "password": password} | ({"otp": otp} if otp else {})
    return api.post("/auth/login", json=body)


@pytest.fixture
def enrolled(api):
    """alice, with 2FA enabled: (user, secret, backup codes)."""
    alice = api.register("alice")
    setup = api.post("/auth/2fa/setup", alice)
    assert setup.status_code == 200, setup.json
    secret = setup.json["secret"]
    enabled = api.post("/auth/2fa/enable", alice, json={"code": totp_code(secret)})
    assert enabled.status_code == 200, enabled.json
    return alice, secret, enabled.json["backup_codes"]


def test_setup_returns_a_secret_and_uri_without_enabling_and_stores_it_encrypted(api, db):
    alice = api.register("alice")
    setup = api.post("/auth/2fa/setup", alice)
    assert setup.status_code == 200
    secret = setup.json["secret"]
    assert setup.json["otpauth_uri"].startswith("otpauth://totp/")
    assert f"secret={secret}" in setup.json["otpauth_uri"]
    stored, enabled = db.execute("SELECT totp_secret, totp_enabled FROM users").fetchone()
    assert enabled is False
    assert secret not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert login(api).status_code == 200  # not enabled yet: no code asked


def test_without_a_key_setup_refuses_and_stores_nothing(api, db, environment):
    alice = api.register("alice")
    environment(TOTP_ENCRYPTION_KEY=None)
    refused = api.post("/auth/2fa/setup", alice)
    assert refused.status_code == 503
    assert error_code(refused) == "two_factor_unavailable"
    assert db.execute("SELECT totp_secret FROM users").fetchone() == (None,)


def test_enable_needs_a_right_code(api, db):
    alice = api.register("alice")
    secret = api.post("/auth/2fa/setup", alice).json["secret"]
    refused = api.post("/auth/2fa/enable", alice, json={"code": wrong_code(secret)})
    assert refused.status_code == 422
    assert error_code(refused) == "otp_invalid"
    assert db.execute("SELECT totp_enabled FROM users").fetchone() == (False,)


def test_enable_returns_ten_backup_codes_stored_only_hashed_and_is_audited(enrolled, db):
    _, _, codes = enrolled
    assert len(set(codes)) == 10
    (stored,) = db.execute("SELECT backup_codes FROM users").fetchone()
    assert len(stored) == 10
    dump = str(db.execute("SELECT * FROM users").fetchall())
    assert not any(code in dump or code.replace("-", "") in dump for code in codes)
    digest = hashlib.sha256(codes[0].replace("-", "").encode()).hexdigest()
    assert digest in stored
    events = [e for (e,) in db.execute("SELECT event_type FROM audit_logs ORDER BY id")]
    assert "2fa_setup" in events
    assert "2fa_enabled" in events


def test_login_then_needs_a_code(enrolled, api):
    missing = login(api)
    assert missing.status_code == 401
    assert error_code(missing) == "otp_required"
    assert "access_token" not in missing.json
    wrong = login(api, wrong_code(enrolled[1]))
    assert wrong.status_code == 401
    assert error_code(wrong) == "otp_invalid"


def test_a_wrong_password_with_a_right_code_is_still_a_wrong_password(enrolled, api):
    refused = login(api, totp_code(enrolled[1], 1), password="not the password")
    assert refused.status_code == 401
    assert error_code(refused) == "invalid_credentials"


def test_a_totp_code_works_once_not_even_again_within_its_window(enrolled, api):
    _, secret, _ = enrolled
    # The code enable used is spent already; the next step's is not.
    assert error_code(login(api, totp_code(secret))) == "otp_invalid"
    fresh = totp_code(secret, 1)
    assert login(api, fresh).status_code == 200
    replayed = login(api, fresh)
    assert replayed.status_code == 401
    assert error_code(replayed) == "otp_invalid"


def test_a_backup_code_works_once(enrolled, api, db):
    _, _, codes = enrolled
    assert login(api, codes[0].upper()).status_code == 200  # typed in any case
    reused = login(api, codes[0])
    assert reused.status_code == 401
    assert error_code(reused) == "otp_invalid"
    assert db.execute("SELECT cardinality(backup_codes) FROM users").fetchone() == (9,)
    assert db.execute(
        "SELECT count(*) FROM audit_logs WHERE event_type = '2fa_backup_code_used'"
    ).fetchone() == (1,)


def test_wrong_codes_count_toward_the_lockout(enrolled, api, db):
    _, secret, codes = enrolled
    statuses = [login(api, wrong_code(secret)).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 423]
    assert login(api, codes[1]).status_code == 423  # locked, even with a good code
    assert db.execute(
        "SELECT count(*) FROM audit_logs WHERE event_data->>'reason' = 'otp_invalid'"
    ).fetchone() == (5,)


def test_a_missing_code_does_not_count_toward_the_lockout(enrolled, api, db):
    for _ in range(6):
        assert error_code(login(api)) == "otp_required"
    assert db.execute("SELECT failed_login_attempts FROM users").fetchone() == (0,)


def test_disable_needs_the_password_and_a_code(enrolled, api, db):
    alice, secret, codes = enrolled
    wrong_password = api.post(
        "/auth/2fa/disable", alice, json={"password": "not it", "code": totp_code(secret, 1)}
    )
    assert wrong_password.status_code == 403
    bad_code = api.post(
        "/auth/2fa/disable", alice, json={"password": PASSWORD, "code": wrong_code(secret)}
    )
    assert bad_code.status_code == 403
    assert error_code(bad_code) == "otp_invalid"
    assert db.execute("SELECT totp_enabled, failed_login_attempts FROM users").fetchone() == (
        True,
        2,
    )
    disabled = api.post("/auth/2fa/disable", alice, json={"password": PASSWORD, "code": codes[2]})
    assert disabled.status_code == 204
    assert db.execute("SELECT totp_enabled, totp_secret, backup_codes FROM users").fetchone() == (
        False,
        None,
        None,
    )
    assert login(api).status_code == 200
    assert db.execute(
        "SELECT count(*) FROM audit_logs WHERE event_type = '2fa_disabled'"
    ).fetchone() == (1,)


def test_setup_again_while_enabled_is_a_conflict(enrolled, api):
    refused = api.post("/auth/2fa/setup", enrolled[0])
    assert refused.status_code == 409
    assert error_code(refused) == "two_factor_enabled"


def test_a_new_key_in_front_takes_over_the_secret_at_the_next_login(enrolled, api, db, environment):
    _, secret, _ = enrolled
    old_key = os.environ["TOTP_ENCRYPTION_KEY"]
    new_key = Fernet.generate_key().decode()
    environment(TOTP_ENCRYPTION_KEY=f"{new_key},{old_key}")
    assert login(api, totp_code(secret, 1)).status_code == 200
    (stored,) = db.execute("SELECT totp_secret FROM users").fetchone()
    assert Fernet(new_key.encode()).decrypt(stored.encode()).decode() == secret
