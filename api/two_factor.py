"""Two-factor authentication of the seed's users.totp_* columns: set up,
enable (with 10 backup codes, shown once), disable. The codes themselves
are checked by api/credentials.py, at login and here; the secret is
encrypted at rest (veza/two_factor.py). Every change is audited.
"""

from __future__ import annotations

from flask import Blueprint, Response
from sqlalchemy.orm import Session

from api import audit
from api.auth import locked_user
from api.credentials import confirm_identity, now, unavailable
from api.errors import ApiError
from api.schemas import BackupCodesOut, TwoFactorDisableIn, TwoFactorEnableIn, TwoFactorSetupOut
from api.sessions import no_store
from api.spec import operation
from veza import two_factor

bp = Blueprint("two_factor", __name__)
no_store(bp)


def conflict(code: str, message: str) -> ApiError:
    return ApiError(409, code, message)


@operation(
    bp,
    "POST",
    "/auth/2fa/setup",
    summary="Start setting up 2FA: a new secret, not yet enabled",
    responses={200: TwoFactorSetupOut},
    errors=(409, 503),
)
def setup(session: Session) -> TwoFactorSetupOut:
    user = locked_user(session)
    if user.totp_enabled:
        raise conflict("two_factor_enabled", "2FA is already enabled; disable it first.")
    secret = two_factor.new_secret()
    try:
        user.totp_secret = two_factor.encrypt_secret(secret)
    except two_factor.TwoFactorUnavailable as err:
        raise unavailable() from err
    user.totp_last_step = None
    audit.record(session, "2fa_setup", {}, user_id=user.id)
    return TwoFactorSetupOut(
        secret=secret, otpauth_uri=two_factor.provisioning_uri(secret, user.email)
    )


@operation(
    bp,
    "POST",
    "/auth/2fa/enable",
    summary="Enable 2FA with a code of the new secret; returns the backup codes once",
    body=TwoFactorEnableIn,
    responses={200: BackupCodesOut},
    errors=(409, 503),
)
def enable(session: Session, body: TwoFactorEnableIn) -> BackupCodesOut:
    user = locked_user(session)
    if user.totp_enabled:
        raise conflict("two_factor_enabled", "2FA is already enabled.")
    if user.totp_secret is None:
        raise conflict("two_factor_not_set_up", "Call POST /auth/2fa/setup first.")
    try:
        secret = two_factor.decrypt_secret(user.totp_secret)
    except two_factor.TwoFactorUnavailable as err:
        raise unavailable() from err
    step = two_factor.accepted_step(secret, body.code, user.totp_last_step, now())
    if step is None:
        raise ApiError(
            422, "otp_invalid", "The code does not match the secret.", {"code": "wrong code"}
        )
    codes = two_factor.new_backup_codes()
    user.totp_enabled = True
    user.totp_last_step = step
    user.backup_codes = [two_factor.backup_code_digest(code) for code in codes]
    audit.record(session, "2fa_enabled", {"backup_codes": len(codes)}, user_id=user.id)
    return BackupCodesOut(backup_codes=codes)


@operation(
    bp,
    "POST",
    "/auth/2fa/disable",
    summary="Disable 2FA (the password and a TOTP or backup code)",
    body=TwoFactorDisableIn,
    responses={204: None},
    errors=(403, 409, 423, 503),
)
def disable(session: Session, body: TwoFactorDisableIn) -> tuple[None, int] | Response:
    user = locked_user(session)
    if not user.totp_enabled:
        raise conflict("two_factor_not_enabled", "2FA is not enabled.")
    refused = confirm_identity(session, user, body.password, body.code)
    if refused is not None:
        return refused
    user.totp_enabled = False
    user.totp_secret = None
    user.totp_last_step = None
    user.backup_codes = None
    audit.record(session, "2fa_disabled", {}, user_id=user.id)
    return None, 204
