"""Checking what a user knows, and counting what they got wrong.

Every failure — a wrong password at login or on an authenticated endpoint
that asks for it again, a wrong 2FA code — counts toward the lockout: five
in a row lock the account for 15 minutes. A failure is answered with a
returned response, not a raised error, precisely so that its count and its
audit row commit with the 401/403/423.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Response
from sqlalchemy.orm import Session

from api import audit
from api.errors import ApiError, error_response
from db.models import AuditSeverity, User
from veza import two_factor
from veza.passwords import password_matches

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)


def now() -> datetime:
    return datetime.now(UTC)


def is_locked(user: User) -> bool:
    return user.locked_until is not None and user.locked_until > now()


def invalid_credentials() -> Response:
    return error_response(401, "invalid_credentials", "Wrong login or password.")


def locked(user: User) -> Response:
    assert user.locked_until is not None
    return error_response(
        423,
        "account_locked",
        "Too many failed attempts; the account is locked for now.",
        {"locked_until": user.locked_until.isoformat()},
    )


def count_failure(session: Session, user: User, reason: str, answer: Response) -> Response:
    """Count a failure; `answer` unless this one locks the account (423)."""
    user.failed_login_attempts += 1
    audit.record(
        session,
        "login_failed",
        {"reason": reason, "attempt": user.failed_login_attempts},
        user_id=user.id,
        severity=AuditSeverity.warning,
    )
    if user.failed_login_attempts < MAX_FAILED_LOGINS:
        return answer
    user.failed_login_attempts = 0
    user.locked_until = now() + LOCKOUT
    audit.record(
        session,
        "account_locked",
        {"locked_until": user.locked_until.isoformat()},
        user_id=user.id,
        severity=AuditSeverity.warning,
    )
    return locked(user)


def use_second_factor(session: Session, user: User, code: str) -> bool:
    """Whether `code` is a TOTP code not used before or an unused backup
    code of this user; either is then used up. 503 when the secret cannot
    be decrypted (no key or the wrong key): nothing is counted against a
    user for the server's configuration."""
    if two_factor.is_totp_code(code):
        try:
            secret = two_factor.decrypt_secret(user.totp_secret or "")
        except two_factor.TwoFactorUnavailable as err:
            raise unavailable() from err
        step = two_factor.accepted_step(secret, code, user.totp_last_step, now())
        if step is None:
            return False
        user.totp_last_step = step
        user.totp_secret = two_factor.rotated(user.totp_secret or "")
        return True
    remaining = two_factor.without_backup_code(user.backup_codes, code)
    if remaining is None:
        return False
    user.backup_codes = remaining
    audit.record(session, "2fa_backup_code_used", {"remaining": len(remaining)}, user_id=user.id)
    return True


def unavailable() -> ApiError:
    return ApiError(
        503,
        "two_factor_unavailable",
        "Two-factor authentication is not available on this server right now.",
    )


def confirm_identity(
    session: Session, user: User, password: str, code: str | None = None
) -> Response | None:
    """For an authenticated request that asks for the password again (and a
    2FA code): None if they are right, else the answer to return. `user`
    must be locked FOR UPDATE (its failure count changes)."""
    if is_locked(user):
        return locked(user)
    wrong = error_response(403, "invalid_password", "The password is wrong.")
    if not password_matches(user.password_hash, password):
        return count_failure(session, user, "bad_password", wrong)
    if code is not None and not use_second_factor(session, user, code):
        wrong_code = error_response(403, "otp_invalid", "The code is wrong or already used.")
        return count_failure(session, user, "otp_invalid", wrong_code)
    user.failed_login_attempts = 0
    return None
