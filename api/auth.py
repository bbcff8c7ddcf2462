"""Accounts and sessions: register, login, refresh, logout, and the bearer
check every other endpoint runs.

Tokens are opaque: 32 random bytes, URL-safe. Only their SHA-256 is stored
(user_sessions.token_hash), so a copy of the database does not let anyone
in. A login makes two session rows: the access token's (short-lived) and
the refresh token's, whose access_token_jti names the access row it was
issued with. Refreshing rotates both; logout deactivates both.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Blueprint, Response, g, request
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from api import audit
from api.errors import ApiError, error_response
from api.request_context import client_ip, user_agent
from api.schemas import LoginIn, RefreshIn, RegisterIn, TokensOut, UserOut
from api.spec import operation
from db.models import AuditSeverity, User, UserSession
from veza.settings import get_settings

bp = Blueprint("auth", __name__)

ACCESS_TOKEN_TTL = timedelta(hours=1)
REFRESH_TOKEN_TTL = timedelta(days=30)
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)

# argon2id. The defaults are argon2-cffi's (RFC 9106 low-memory profile);
# ARGON2_TIME_COST / ARGON2_MEMORY_KIB exist so that a test suite creating
# hundreds of users need not spend 0.5 s of CPU on each. A hash records its
# parameters, and logins rehash to the current ones.
hasher = PasswordHasher(
    time_cost=get_settings().argon2_time_cost,
    memory_cost=get_settings().argon2_memory_kib,
)
# Verified against when the login names nobody, so that "no such user" and
# "wrong password" take the same time.
DUMMY_HASH = hasher.hash(secrets.token_hex(16))


def now() -> datetime:
    return datetime.now(UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def user_out(user: User, *, with_email: bool = False) -> UserOut:
    fields = {name: getattr(user, name) for name in UserOut.model_fields}
    return UserOut(
        **fields | {"role": user.role.value, "email": user.email if with_email else None}
    )


# ------------------------------------------------------------ bearer check


def unauthorized(message: str = "A valid bearer token is required.") -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def find_session(session: Session, token: str, *, refresh: bool) -> tuple[UserSession, User] | None:
    """The active, unexpired session of this token and kind, and its active
    user; None otherwise. One query: it runs on every request. A refresh
    session is locked, so that one refresh token is redeemed only once."""
    digest = token_hash(token)
    query = (
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == digest)
    )
    found = session.execute(query.with_for_update(of=UserSession) if refresh else query).first()
    if found is None:
        return None
    row, user = found
    # The lookup above is by the SHA-256 of a 256-bit random token, so its
    # timing tells an attacker nothing usable; compare_digest is belt and
    # braces should the lookup ever change (e.g. to a prefix match).
    if not hmac.compare_digest(row.token_hash, digest):
        return None
    is_refresh_row = row.access_token_jti is not None
    if not row.is_active or row.expires_at <= now() or is_refresh_row != refresh:
        return None
    if not user.is_active or user.deleted_at is not None:
        return None
    return row, user


def authenticate(session: Session) -> User:
    """Set g.user and g.auth_session from the Authorization header, or 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    found = find_session(session, token.strip(), refresh=False)
    if found is None:
        raise unauthorized()
    auth_session, user = found
    g.auth_session, g.user = auth_session, user
    return user


# ---------------------------------------------------------------- sessions


def open_session(session: Session, user: User) -> TokensOut:
    access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    issued = now()
    access_row = UserSession(
        user_id=user.id,
        token_hash=token_hash(access),
        expires_at=issued + ACCESS_TOKEN_TTL,
        ip_address=client_ip(),
        user_agent=user_agent(),
    )
    session.add(access_row)
    session.flush()
    session.add(
        UserSession(
            user_id=user.id,
            token_hash=token_hash(refresh),
            access_token_jti=access_row.id,
            expires_at=issued + REFRESH_TOKEN_TTL,
            ip_address=client_ip(),
            user_agent=user_agent(),
        )
    )
    return TokensOut(
        access_token=access,
        refresh_token=refresh,
        expires_at=access_row.expires_at,
        refresh_expires_at=issued + REFRESH_TOKEN_TTL,
        user=user_out(user, with_email=True),
    )


def close_session(session: Session, access_row_id: uuid.UUID) -> None:
    """Deactivate an access session and the refresh session issued with it."""
    session.execute(
        update(UserSession)
        .where(or_(UserSession.id == access_row_id, UserSession.access_token_jti == access_row_id))
        .values(is_active=False)
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
    taken = session.scalars(
        select(User.username, User.email).where(
            or_(User.username == body.username, func.lower(User.email) == body.email.lower())
        )
    ).all()
    if taken:
        raise ApiError(409, "account_exists", "That username or email is already registered.")
    user = User(
        username=body.username,
        email=body.email,
        display_name=body.display_name,
        password_hash=hasher.hash(body.password),
    )
    session.add(user)
    session.flush()
    session.refresh(user)
    return user_out(user, with_email=True), 201


@operation(
    bp,
    "POST",
    "/auth/login",
    summary="Log in with a username or email",
    auth=False,
    body=LoginIn,
    responses={200: TokensOut},
    errors=(401, 423),
)
def login(session: Session, body: LoginIn) -> TokensOut | Response:
    user = session.scalar(
        select(User)
        .where(
            or_(User.username == body.login, func.lower(User.email) == body.login.lower()),
            User.deleted_at.is_(None),
        )
        .with_for_update()
    )
    if user is None:
        password_matches(DUMMY_HASH, body.password)
        audit.record(
            session,
            "login_failed",
            {"login": body.login, "reason": "unknown_user"},
            user_id=None,
            severity=AuditSeverity.warning,
        )
        return invalid_credentials()
    if user.locked_until is not None and user.locked_until > now():
        audit.record(
            session,
            "login_failed",
            {"reason": "locked"},
            user_id=user.id,
            severity=AuditSeverity.warning,
        )
        return locked(user.locked_until)
    if not user.is_active or not password_matches(user.password_hash, body.password):
        return failed_login(session, user)
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(body.password)
    user.failed_login_attempts = 0
    user.locked_until = None
    user.last_login_at = now()
    tokens = open_session(session, user)
    audit.record(session, "login_succeeded", {}, user_id=user.id)
    return tokens


def failed_login(session: Session, user: User) -> Response:
    """Count the failure (committed with the 401/423: the response is a
    normal return, not an exception, precisely so that it commits)."""
    user.failed_login_attempts += 1
    audit.record(
        session,
        "login_failed",
        {"reason": "bad_password", "attempt": user.failed_login_attempts},
        user_id=user.id,
        severity=AuditSeverity.warning,
    )
    if user.failed_login_attempts < MAX_FAILED_LOGINS:
        return invalid_credentials()
    user.failed_login_attempts = 0
    user.locked_until = now() + LOCKOUT
    audit.record(
        session,
        "account_locked",
        {"locked_until": user.locked_until.isoformat()},
        user_id=user.id,
        severity=AuditSeverity.warning,
    )
    return locked(user.locked_until)


def invalid_credentials() -> Response:
    return error_response(401, "invalid_credentials", "Wrong login or password.")


def locked(until: datetime) -> Response:
    return error_response(
        423,
        "account_locked",
        "Too many failed logins; the account is locked for now.",
        {"locked_until": until.isoformat()},
    )


@operation(
    bp,
    "POST",
    "/auth/refresh",
    summary="Trade a refresh token for new tokens",
    auth=False,
    body=RefreshIn,
    responses={200: TokensOut},
    errors=(401,),
)
def refresh(session: Session, body: RefreshIn) -> TokensOut:
    found = find_session(session, body.refresh_token, refresh=True)
    if found is None:
        raise unauthorized("The refresh token is invalid, expired or already used.")
    row, user = found
    assert row.access_token_jti is not None  # a refresh row (find_session)
    close_session(session, row.access_token_jti)
    return open_session(session, user)


@operation(bp, "POST", "/auth/logout", summary="End this session", responses={204: None})
def logout(session: Session) -> tuple[None, int]:
    close_session(session, g.auth_session.id)
    audit.record(session, "logout", {}, user_id=g.user.id)
    return None, 204
