"""Two-factor authentication: TOTP (RFC 6238, pyotp) and backup codes.

The TOTP secret is stored encrypted (Fernet through MultiFernet, keys from
TOTP_ENCRYPTION_KEY, newest first); without a key 2FA cannot be set up, and
a stored secret cannot be read: never stored or used in the clear.

A code is accepted for the current 30-second step or the one on either side
(clock drift), and only for a step later than the last one accepted, so a
code cannot be replayed, not even within its window.

Backup codes are 16 random characters of a 32-letter alphabet (80 bits),
shown once; only their SHA-256 is stored. Like the session tokens they are
random, not chosen, so a fast hash is enough, and checking one costs no
argon2 verification (a login costs exactly one, whatever its path).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import pyotp
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from veza.settings import get_settings

ISSUER = "Veza"
BACKUP_CODES = 10
# No 0/o, 1/l/i: codes are read off paper and typed.
BACKUP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
BACKUP_CODE_GROUPS, BACKUP_GROUP_LENGTH = 4, 4
# Steps either side of the current one still accepted (30 s each).
VALID_WINDOW = 1


class TwoFactorUnavailable(Exception):
    """No key to encrypt with, or none that decrypts the stored secret."""


def _cipher() -> MultiFernet:
    keys = get_settings().totp_encryption_key
    if keys is None:
        raise TwoFactorUnavailable("TOTP_ENCRYPTION_KEY is not set")
    return MultiFernet([Fernet(key.strip()) for key in keys.get_secret_value().split(",")])


def encrypt_secret(secret: str) -> str:
    return _cipher().encrypt(secret.encode("ascii")).decode("ascii")


def decrypt_secret(stored: str) -> str:
    try:
        return _cipher().decrypt(stored.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise TwoFactorUnavailable("no key of TOTP_ENCRYPTION_KEY decrypts the secret") from None


def rotated(stored: str) -> str:
    """The stored secret encrypted again with the first key, so that secrets
    move to a new key as their users log in (the old key can then go)."""
    try:
        return _cipher().rotate(stored.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise TwoFactorUnavailable("no key of TOTP_ENCRYPTION_KEY decrypts the secret") from None


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def is_totp_code(code: str) -> bool:
    return len(code) == 6 and code.isascii() and code.isdigit()


def accepted_step(secret: str, code: str, last_step: int | None, at: datetime) -> int | None:
    """The time step `code` is valid for, if it is one of the steps around
    `at` and later than `last_step`; None otherwise."""
    if not is_totp_code(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(at)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_backup_codes() -> list[str]:
    return [
        "-".join(
            "".join(secrets.choice(BACKUP_ALPHABET) for _ in range(BACKUP_GROUP_LENGTH))
            for _ in range(BACKUP_CODE_GROUPS)
        )
        for _ in range(BACKUP_CODES)
    ]


def backup_code_digest(code: str) -> str:
    """The stored form of a backup code, however it was typed (case,
    dashes, spaces)."""
    typed = "".join(code.lower().split()).replace("-", "")
    return hashlib.sha256(typed.encode("utf-8")).hexdigest()


def without_backup_code(digests: list[str] | None, code: str) -> list[str] | None:
    """The digests left once `code` is used up, or None if it is not one of
    them. Every digest is compared, in constant time."""
    typed = backup_code_digest(code)
    matches = [hmac.compare_digest(digest, typed) for digest in digests or []]
    if not any(matches):
        return None
    return [digest for digest, used in zip(digests or [], matches, strict=True) if not used]
