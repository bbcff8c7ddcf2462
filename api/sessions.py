"""Sessions: the tokens a login hands out, their families, and the
endpoints that refresh, list and end them.

Tokens are opaque: 32 random bytes, URL-safe. Only their SHA-256 is stored
(user_sessions.token_hash), so a copy of the database does not let anyone
in. A login opens a family of two rows: the access token's (short-lived)
and the refresh token's, whose access_token_jti names the access row it was
issued with. Refreshing rotates both into new rows of the same family, which
keep the family's id and its login time (authenticated_at):
  - a family ends SESSION_ABSOLUTE_LIFETIME_DAYS after its login, however
    often it is refreshed;
  - a refresh token presented once it was rotated (or logged out) is a
    stolen copy or a stolen original: the whole family is revoked, and the
    reuse audited.
What the user sees as "a session" is a family (GET /auth/sessions).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, g
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api import audit
from api.access import is_usable, not_found
from api.errors import ApiError, error_response
from api.request_context import client_ip, user_agent
from api.schemas import (
    DeviceInfo,
    LocationInfo,
    RefreshIn,
    SessionOut,
    SessionsOut,
    TokensOut,
    UserOut,
)
from api.spec import operation
from db.engine import affected
from db.models import AuditSeverity, User, UserSession
from veza.devices import device_info, location_info
from veza.settings import get_settings

bp = Blueprint("sessions", __name__)

ACCESS_TOKEN_TTL = timedelta(hours=1)
REFRESH_TOKEN_TTL = timedelta(days=30)
# last_activity_at is written at most this often per session: a write per
# request would double the cost of every read.
ACTIVITY_RESOLUTION = timedelta(minutes=1)
# A user is online while a live session of theirs was active this recently:
# several ACTIVITY_RESOLUTION steps, so that someone busy in a client never
# blinks offline between two writes of last_activity_at.
ONLINE_WINDOW = timedelta(minutes=5)


def now() -> datetime:
    return datetime.now(UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def family_end(row: UserSession) -> datetime:
    """When the row's family ends: its login plus the absolute lifetime
    (the setting as it is now, so lowering it shortens live families)."""
    return row.authenticated_at + timedelta(days=get_settings().session_absolute_lifetime_days)


def is_live(row: UserSession, at: datetime) -> bool:
    return row.is_active and row.expires_at > at and family_end(row) > at


def user_out(user: User, *, to_self: bool = False) -> UserOut:
    """The user as UserOut; their email and 2FA state only when shown to
    the user themself (to_self), null to anyone else."""
    fields = {name: getattr(user, name) for name in UserOut.model_fields}
    private = {"email": user.email, "totp_enabled": user.totp_enabled}
    shown = private if to_self else dict.fromkeys(private)
    return UserOut(**fields | shown | {"role": user.role.value})


def is_online(session: Session, user_id: int) -> bool:
    """Whether a live session of the user was active within ONLINE_WINDOW:
    logging out (or the last session ending) is going offline at once;
    closing the client, ONLINE_WINDOW later."""
    at = now()
    recent = session.scalars(
        select(UserSession).where(
            UserSession.user_id == user_id,
            UserSession.is_active.is_(True),
            UserSession.last_activity_at >= at - ONLINE_WINDOW,
        )
    )
    return any(is_live(row, at) for row in recent)


def no_store(blueprint: Blueprint) -> None:
    """Every response of `blueprint` carries tokens, secrets or a user's own
    data: no cache (a browser's, a proxy's) may keep a copy."""

    @blueprint.after_request
    def _no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"  # HTTP/1.0 caches
        return response


no_store(bp)


# ------------------------------------------------------------ bearer check


def find_session(
    session: Session, token: str, *, lock: bool = False
) -> tuple[UserSession, User] | None:
    """The session row of this token (whatever its state) and its user. A
    refresh locks its row, so that one refresh token is redeemed once; the
    bearer check does not, or a client's parallel requests would queue."""
    digest = token_hash(token)
    query = (
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == digest)
    )
    found = session.execute(query.with_for_update(of=UserSession) if lock else query).first()
    if found is None:
        return None
    row, user = found
    # The lookup above is by the SHA-256 of a 256-bit random token, so its
    # timing tells an attacker nothing usable; compare_digest is belt and
    # braces should the lookup ever change (e.g. to a prefix match).
    if not hmac.compare_digest(row.token_hash, digest):
        return None
    return row, user


def access_session(session: Session, token: str) -> tuple[UserSession, User] | None:
    """The live access session of this token and its usable user, or None;
    its last activity is brought up to date (at most once a minute)."""
    found = find_session(session, token)
    if found is None:
        return None
    row, user = found
    at = now()
    if row.access_token_jti is not None or not is_live(row, at) or not is_usable(user):
        return None
    if at - row.last_activity_at >= ACTIVITY_RESOLUTION:
        row.last_activity_at = at
    return row, user


# ---------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    id: uuid.UUID
    authenticated_at: datetime


def open_session(session: Session, user: User, family: Family | None = None) -> TokensOut:
    """Issue an access and a refresh token: a new family for a login, or
    the next pair of `family` for a refresh (never past its end)."""
    issued = now()
    family = family or Family(uuid.uuid4(), issued)
    ends = family.authenticated_at + timedelta(days=get_settings().session_absolute_lifetime_days)
    access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    where: dict[str, Any] = {
        "user_id": user.id,
        "family_id": family.id,
        "authenticated_at": family.authenticated_at,
        "ip_address": client_ip(),
        "user_agent": user_agent(),
        "device_info": device_info(user_agent()),
        "location_info": location_info(client_ip()),
    }
    access_row = UserSession(
        token_hash=token_hash(access), expires_at=min(issued + ACCESS_TOKEN_TTL, ends), **where
    )
    session.add(access_row)
    session.flush()
    refresh_row = UserSession(
        token_hash=token_hash(refresh),
        access_token_jti=access_row.id,
        expires_at=min(issued + REFRESH_TOKEN_TTL, ends),
        **where,
    )
    session.add(refresh_row)
    return TokensOut(
        access_token=access,
        refresh_token=refresh,
        expires_at=access_row.expires_at,
        refresh_expires_at=refresh_row.expires_at,
        user=user_out(user, to_self=True),
    )


def revoke(
    session: Session,
    user_id: int,
    *,
    family: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> int:
    """Deactivate the user's live rows (of one family, or of all but `keep`);
    how many."""
    query = update(UserSession).where(
        UserSession.user_id == user_id, UserSession.is_active.is_(True)
    )
    if family is not None:
        query = query.where(UserSession.family_id == family)
    if keep is not None:
        query = query.where(UserSession.family_id != keep)
    return affected(session.execute(query.values(is_active=False)))


def refresh_refused() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "The refresh token is invalid, expired or already used.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def reused_refresh_token(session: Session, row: UserSession) -> Response:
    """A rotated or logged-out refresh token came back: revoke its family.
    Answered with a returned response, not a raised error, so that the
    revocation and its audit row commit."""
    revoked = revoke(session, row.user_id, family=row.family_id)
    audit.record(
        session,
        "refresh_token_reused",
        {"family_id": str(row.family_id), "revoked_sessions": revoked},
        user_id=row.user_id,
        severity=AuditSeverity.warning,
    )
    error = refresh_refused()
    return error_response(error.status, error.code, error.message, headers=error.headers)


# --------------------------------------------------------------- endpoints


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
def refresh(session: Session, body: RefreshIn) -> TokensOut | Response:
    found = find_session(session, body.refresh_token, lock=True)
    if found is None or found[0].access_token_jti is None:
        raise refresh_refused()
    row, user = found
    if not row.is_active:
        return reused_refresh_token(session, row)
    if not is_live(row, now()) or not is_usable(user):
        raise refresh_refused()
    row.is_active = False
    session.execute(
        update(UserSession).where(UserSession.id == row.access_token_jti).values(is_active=False)
    )
    return open_session(session, user, Family(row.family_id, row.authenticated_at))


@operation(bp, "POST", "/auth/logout", summary="End this session", responses={204: None})
def logout(session: Session) -> tuple[None, int]:
    revoke(session, g.user.id, family=g.auth_session.family_id)
    audit.record(session, "logout", {}, user_id=g.user.id)
    return None, 204


@operation(
    bp, "POST", "/auth/logout-all", summary="End every session, this one too", responses={204: None}
)
def logout_all(session: Session) -> tuple[None, int]:
    revoked = revoke(session, g.user.id)
    audit.record(session, "logout_all", {"revoked_sessions": revoked}, user_id=g.user.id)
    return None, 204


@operation(
    bp, "GET", "/auth/sessions", summary="The caller's live sessions", responses={200: SessionsOut}
)
def list_sessions(session: Session) -> SessionsOut:
    at = now()
    rows = session.scalars(
        select(UserSession)
        .where(UserSession.user_id == g.user.id, UserSession.is_active.is_(True))
        .order_by(UserSession.created_at)
    ).all()
    families: dict[uuid.UUID, list[UserSession]] = {}
    for row in rows:
        if is_live(row, at):
            families.setdefault(row.family_id, []).append(row)
    listed = [session_out(members) for members in families.values()]
    return SessionsOut(sessions=sorted(listed, key=lambda s: s.last_activity_at, reverse=True))


def session_out(members: list[UserSession]) -> SessionOut:
    """One family as the user sees it: the newest row's client, the latest
    activity of any of its rows, and when its refresh token runs out."""
    newest = members[-1]
    return SessionOut(
        id=newest.family_id,
        current=newest.family_id == g.auth_session.family_id,
        signed_in_at=newest.authenticated_at,
        last_activity_at=max(row.last_activity_at for row in members),
        expires_at=max(row.expires_at for row in members),
        ip_address=str(newest.ip_address) if newest.ip_address else None,
        user_agent=newest.user_agent,
        device_info=DeviceInfo.model_validate(newest.device_info) if newest.device_info else None,
        location_info=(
            LocationInfo.model_validate(newest.location_info) if newest.location_info else None
        ),
    )


@operation(
    bp,
    "DELETE",
    "/auth/sessions/<uuid:session_id>",
    summary="End one of the caller's sessions",
    responses={204: None},
)
def end_session(session: Session, session_id: uuid.UUID) -> tuple[None, int]:
    # Only the caller's own: someone else's id revokes nothing and answers
    # the same 404 as an id that never existed.
    if revoke(session, g.user.id, family=session_id) == 0:
        raise not_found()
    audit.record(session, "session_revoked", {"family_id": str(session_id)}, user_id=g.user.id)
    return None, 204
