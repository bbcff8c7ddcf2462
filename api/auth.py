"""Accounts: register, login, password change, and the bearer check every
other endpoint runs. Tokens and their sessions are api/sessions.py's; what
a user knows and the lockout, api/credentials.py's.

Login costs one argon2 verification on every path (unknown login, wrong
password, deactivated account, locked account, 2FA code missing or wrong,
success), so that its timing does not tell which path it took
(bench/login_timing.py); and an unknown or deactivated account answers
exactly as a wrong password does.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, g, request
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from api import audit
from api.credentials import (
    confirm_identity,
    count_failure,
    invalid_credentials,
    is_locked,
    locked,
    use_second_factor,
)
from api.errors import ApiError, error_response
from api.schemas import LoginIn, PasswordChangeIn, RegisterIn, TokensOut, UserOut
from api.sessions import access_session, no_store, now, open_session, revoke, user_out
from api.spec import operation
from db.models import AuditSeverity, User
from veza.passwords import DUMMY_HASH, hash_password, needs_rehash, password_matches, policy_refusal
from veza.settings import get_settings

bp = Blueprint("auth", __name__)
no_store(bp)


# ------------------------------------------------------------ bearer check


def unauthorized(message: str = "A valid bearer token is required.") -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def authenticate(session: Session) -> User:
    """Set g.user and g.auth_session from the Authorization header, or 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    found = access_session(session, token.strip())
    if found is None:
        raise unauthorized()
    auth_session, user = found
    g.auth_session, g.user = auth_session, user
    return user


def locked_user(session: Session) -> User:
    """The caller's row, locked: its failure count or password changes."""
    user = session.get(User, g.user.id, with_for_update=True, populate_existing=True)
    assert user is not None  # authenticate found it in this transaction
    return user


# ---------------------------------------------------------------- policy


def refuse_weak(field: str, password: str, user: User | RegisterIn) -> None:
    """422 naming `field` when the password policy refuses `password`."""
    names = [user.display_name] if user.display_name else []
    refusal = policy_refusal(password, username=user.username, email=user.email, names=names)
    if refusal is not None:
        raise ApiError(
            422, "validation_failed", "The password is too weak.", {field: f"Password {refusal}"}
        )


# --------------------------------------------------------------- endpoints


@operation(
    bp,
    "POST",
    "/auth/register",
    summary="Create an account",
    auth=False,
    body=RegisterIn,
    responses={201: UserOut},
    errors=(409,),
)
def register(session: Session, body: RegisterIn) -> tuple[UserOut, int]:
    refuse_weak("password", body.password, body)
    # Usernames and emails are unique whatever their case (0004, 0009).
    taken = session.scalars(
        select(User.id).where(
            or_(
                func.lower(User.username) == body.username.lower(),
                func.lower(User.email) == body.email.lower(),
            )
        )
    ).all()
    if taken:
        raise ApiError(409, "account_exists", "That username or email is already registered.")
    user = User(
        username=body.username,
        email=body.email,
        display_name=body.display_name,
        password_hash=hash_password(body.password),
    )
    session.add(user)
    session.flush()
    session.refresh(user)
    return user_out(user, to_self=True), 201


def find_login(session: Session, login: str, *, restorable: bool = False) -> User | None:
    """The undeleted account whose username or email is `login`, in any
    case, locked for its failure count; with `restorable`, the deleted one
    still within its grace (api/users.py's restore)."""
    grace = timedelta(days=get_settings().account_delete_grace_days)
    state = (
        and_(User.deleted_at > now() - grace, User.erased_at.is_(None))
        if restorable
        else User.deleted_at.is_(None)
    )
    return session.scalar(
        select(User)
        .where(
            or_(
                func.lower(User.username) == login.lower(), func.lower(User.email) == login.lower()
            ),
            state,
        )
        .with_for_update()
    )


@operation(
    bp,
    "POST",
    "/auth/login",
    summary="Log in with a username or email (and a 2FA code when enabled)",
    auth=False,
    body=LoginIn,
    responses={200: TokensOut},
    errors=(401, 423, 503),
)
def login(session: Session, body: LoginIn) -> TokensOut | Response:
    user = checked_credentials(session, body)
    if isinstance(user, Response):
        return user
    return logged_in(session, user, body.password)


def checked_credentials(
    session: Session, body: LoginIn, *, restorable: bool = False
) -> User | Response:
    """The account these credentials prove (a live one; with `restorable`,
    one deleted within its grace), or the refusal to answer: every path
    costs one password hash, and every wrong guess counts toward the lock."""
    user = find_login(session, body.login, restorable=restorable)
    if user is None:
        password_matches(DUMMY_HASH, body.password)  # the same cost as any other path
        audit.record(
            session,
            "login_failed",
            {"login": body.login, "reason": "unknown_user"},
            user_id=None,
            severity=AuditSeverity.warning,
        )
        return invalid_credentials()
    password_ok = password_matches(user.password_hash, body.password)
    if is_locked(user):
        audit.record(
            session,
            "login_failed",
            {"reason": "locked"},
            user_id=user.id,
            severity=AuditSeverity.warning,
        )
        return locked(user)
    if not user.is_active:
        # The right password included: answered as a wrong one, and counted.
        return count_failure(session, user, "deactivated", invalid_credentials())
    if not password_ok:
        return count_failure(session, user, "bad_password", invalid_credentials())
    if user.totp_enabled:
        refused = second_factor_refusal(session, user, body.otp)
        if refused is not None:
            return refused
    return user


def second_factor_refusal(session: Session, user: User, otp: str | None) -> Response | None:
    """The 401 of a login whose password was right and whose 2FA code is
    missing (not counted: a client asks for it only now) or wrong (counted)."""
    if otp is None:
        audit.record(session, "login_failed", {"reason": "otp_required"}, user_id=user.id)
        return error_response(401, "otp_required", "A 2FA code (or a backup code) is required.")
    if use_second_factor(session, user, otp):
        return None
    wrong = error_response(401, "otp_invalid", "The 2FA code is wrong or already used.")
    return count_failure(session, user, "otp_invalid", wrong)


def logged_in(session: Session, user: User, password: str) -> TokensOut:
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_login_attempts = 0
    user.locked_until = None
    user.last_login_at = now()
    tokens = open_session(session, user)
    audit.record(session, "login_succeeded", {}, user_id=user.id)
    return tokens


@operation(
    bp,
    "POST",
    "/auth/password",
    summary="Change the password; every other session ends",
    body=PasswordChangeIn,
    responses={204: None},
    errors=(403, 423),
)
def change_password(session: Session, body: PasswordChangeIn) -> tuple[None, int] | Response:
    user = locked_user(session)
    refused = confirm_identity(session, user, body.current_password)
    if refused is not None:
        return refused
    if body.new_password == body.current_password:
        raise ApiError(
            422,
            "validation_failed",
            "The new password is the current one.",
            {"new_password": "Password must differ from the current one"},
        )
    refuse_weak("new_password", body.new_password, user)
    user.password_hash = hash_password(body.new_password)
    revoked = revoke(session, user.id, keep=g.auth_session.family_id)
    audit.record(session, "password_changed", {"revoked_sessions": revoked}, user_id=user.id)
    return None, 204
