"""Profiles: anyone's by id, and the caller's own, which they read and change;
and the account's end: deleting it (at once: sessions revoked, login
refused) and restoring it within ACCOUNT_DELETE_GRACE_DAYS, after which
maintenance.erase_deleted_accounts erases it (veza/accounts/erasure.py).

A profile is the seed's user JSON with `is_online`; its email and 2FA state
are shown to the user themself only (api/sessions.py, user_out). An account
that is deactivated or deleted has no profile: the one 404, as an unknown id.
"""

from __future__ import annotations

from flask import Blueprint, Response, g
from sqlalchemy import func
from sqlalchemy.orm import Session

from api import audit
from api.access import usable_user
from api.auth import checked_credentials, locked_user
from api.credentials import confirm_identity
from api.errors import error_response
from api.schemas import AccountDeleteIn, LoginIn, ProfileOut, ProfilePatch
from api.sessions import is_online, no_store, revoke, user_out
from api.spec import operation
from db.models import User

bp = Blueprint("users", __name__)
no_store(bp)


def profile_out(session: Session, user: User) -> ProfileOut:
    shown = user_out(user, to_self=user.id == g.user.id)
    return ProfileOut(**dict(shown), is_online=is_online(session, user.id))


@operation(
    bp, "GET", "/users/me", summary="The caller's profile (with email)", responses={200: ProfileOut}
)
def my_profile(session: Session) -> ProfileOut:
    return profile_out(session, g.user)


@operation(
    bp, "GET", "/users/<id:user_id>", summary="A user's profile", responses={200: ProfileOut}
)
def user_profile(session: Session, user_id: int) -> ProfileOut:
    return profile_out(session, usable_user(session, user_id))


@operation(
    bp,
    "PATCH",
    "/users/me",
    summary="Change the caller's profile",
    body=ProfilePatch,
    responses={200: ProfileOut},
)
def update_profile(session: Session, body: ProfilePatch) -> ProfileOut:
    user = locked_user(session)
    changes = body.model_dump(exclude_unset=True)
    changed = sorted(name for name, value in changes.items() if getattr(user, name) != value)
    for name in changed:
        setattr(user, name, changes[name])
    if changed:
        user.updated_at = func.now()
        # The names, not the values: a profile is personal data, and the
        # audit log outlives an account's erasure.
        audit.record(
            session,
            "profile_changed",
            {"fields": changed},
            user_id=user.id,
            resource=("user", user.id),
        )
        session.flush()
    return profile_out(session, user)


@operation(
    bp,
    "DELETE",
    "/users/me",
    summary="Delete your account: at once signed out everywhere; erased after the grace",
    body=AccountDeleteIn,
    responses={204: None},
    errors=(403, 423),
)
def delete_account(session: Session, body: AccountDeleteIn) -> tuple[None, int] | Response:
    user = locked_user(session)
    if user.totp_enabled and body.otp is None:
        return error_response(403, "otp_required", "A 2FA code (or a backup code) is required.")
    refused = confirm_identity(session, user, body.password, body.otp)
    if refused is not None:
        return refused
    user.deleted_at = func.now()
    revoked = revoke(session, user.id)
    audit.record(
        session,
        "account_deleted",
        {"revoked_sessions": revoked},
        user_id=user.id,
        resource=("user", user.id),
    )
    return None, 204


@operation(
    bp,
    "POST",
    "/users/me/restore",
    summary="Undo an account's deletion within its grace (with its login and password)",
    auth=False,
    body=LoginIn,
    responses={204: None},
    errors=(401, 423),
)
def restore_account(session: Session, body: LoginIn) -> tuple[None, int] | Response:
    # Signed out everywhere, the account proves itself as a login does.
    user = checked_credentials(session, body, restorable=True)
    if isinstance(user, Response):
        return user
    user.deleted_at = None
    audit.record(session, "account_restored", {}, user_id=user.id, resource=("user", user.id))
    return None, 204
