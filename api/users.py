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
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api import audit
from api.access import not_found, usable_user
from api.auth import checked_credentials, locked_user
from api.credentials import confirm_identity
from api.errors import ApiError, error_response
from api.files import attachment
from api.request_context import request_id
from api.schemas import AccountDeleteIn, ExportOut, LoginIn, ProfileOut, ProfilePatch
from api.sessions import is_online, no_store, revoke, user_out
from api.spec import API_PREFIX, operation
from db.models import DataExport, User
from veza import jobs, outbox

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


def export_out(export: DataExport) -> ExportOut:
    downloadable = export.status == "done" and export.storage_path is not None
    link = f"{API_PREFIX}/users/me/exports/{export.id}/download"
    # Validated, not constructed: the status is the table's CHECKed text.
    return ExportOut.model_validate(
        {
            "id": export.id,
            "status": export.status,
            "phase": export.phase,
            "size_bytes": export.size_bytes,
            "error": export.error,
            "created_at": export.created_at,
            "finished_at": export.finished_at,
            "expires_at": export.expires_at,
            "download_url": link if downloadable else None,
        }
    )


def my_export(session: Session, export_id: int) -> DataExport:
    export = session.get(DataExport, export_id)
    if export is None or export.user_id != g.user.id:
        raise not_found()
    return export


@operation(
    bp,
    "POST",
    "/users/me/export",
    summary="Export your data: a zip built by a worker (asking again while one is built gets it)",
    responses={202: ExportOut},
)
def start_export(session: Session) -> tuple[ExportOut, int]:
    in_flight = session.scalar(
        select(DataExport).where(
            DataExport.user_id == g.user.id, DataExport.status.in_(("pending", "running"))
        )
    )
    if in_flight is not None:
        return export_out(in_flight), 202
    export = DataExport(user_id=g.user.id, status="pending")
    session.add(export)
    session.flush()
    outbox.enqueue(session, jobs.EXPORT_ACCOUNT, export.id, request_id=request_id())
    audit.record(
        session, "data_export_requested", {}, user_id=g.user.id, resource=("data_export", export.id)
    )
    session.refresh(export)
    return export_out(export), 202


@operation(
    bp,
    "GET",
    "/users/me/exports/<id:export_id>",
    summary="An export of yours: its status, phase and download link",
    responses={200: ExportOut},
)
def get_export(session: Session, export_id: int) -> ExportOut:
    return export_out(my_export(session, export_id))


@operation(
    bp,
    "GET",
    "/users/me/exports/<id:export_id>/download",
    summary="The export's zip, while it is done and not expired",
    responses={200: None},
    binary=True,
    errors=(409,),
)
def download_export(session: Session, export_id: int) -> Response:
    export = my_export(session, export_id)
    if export.status != "done" or export.storage_path is None:
        raise ApiError(409, "export_not_ready", f"The export is {export.status}.")
    audit.record(
        session,
        "data_export_downloaded",
        {},
        user_id=g.user.id,
        resource=("data_export", export.id),
    )
    return attachment(export.storage_path, "application/zip", f"veza-export-{export.id}.zip")
