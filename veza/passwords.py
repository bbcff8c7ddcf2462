"""Passwords: the argon2id hasher and the password policy.

Hashing: argon2id with argon2-cffi's defaults (RFC 9106's low-memory
profile) unless ARGON2_TIME_COST / ARGON2_MEMORY_KIB say otherwise; a hash
records its parameters, so the API rehashes at login when they change.

Policy (PASSWORD_MIN_LENGTH, PASSWORD_MIN_SCORE): a length, then zxcvbn's
estimate of how guessable the password is, told the user's own names so
that a password made of them scores as weak as it is; and, plainly, never
the username or the email itself.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from veza.settings import get_settings

hasher = PasswordHasher(
    time_cost=get_settings().argon2_time_cost,
    memory_cost=get_settings().argon2_memory_kib,
)
# Verified against when a login names nobody, so that every path of a
# login costs one verification of a hash made with the current parameters.
DUMMY_HASH = hasher.hash(secrets.token_hex(16))

# zxcvbn refuses longer input (its matching grows fast with length); the
# first 72 characters are scored, which for a long password is still a
# floor on its strength: a strong prefix makes a strong password.
ZXCVBN_MAX_LENGTH = 72


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_password(password: str) -> str:
    return hasher.hash(password)


def needs_rehash(password_hash: str) -> bool:
    return hasher.check_needs_rehash(password_hash)


def policy_refusal(password: str, *, username: str, email: str, names: list[str]) -> str | None:
    """Why the policy refuses `password` for this user, or None if it
    accepts it. `names`: more of the user's own words (a display name)."""
    settings = get_settings()
    if len(password) < settings.password_min_length:
        return f"must be at least {settings.password_min_length} characters long"
    folded = password.strip().casefold()
    if folded in {username.casefold(), email.casefold(), email.split("@")[0].casefold()}:
        return "must not be your username or email"
    inputs = [username, email, email.split("@")[0], *names]
    verdict = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=inputs)
    if verdict["score"] >= settings.password_min_score:
        return None
    advice = [verdict["feedback"]["warning"], *verdict["feedback"]["suggestions"]]
    return " ".join(["is too easy to guess.", *(line for line in advice if line)])
