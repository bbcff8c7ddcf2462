"""HTTP basic-auth logins from a setting ("user:password", comma-separated),
for the operator pages that have no accounts of their own: the console,
Flower and the exporter.

A login with an empty user or password (`:`, `admin:`) would look protected
and let in anyone who guesses, so it stops the process at start, as an unset
setting does: these pages show and change what only operators may.
"""

from __future__ import annotations

import base64
import binascii
import hmac


def logins(variable: str, value: str | None) -> dict[str, str]:
    """{user: password} from the setting `variable`'s `value`; exits with a
    message naming the variable unless there is at least one login and each
    has a non-empty user and password."""
    found: dict[str, str] = {}
    for login in (value or "").split(","):
        user, colon, password = login.partition(":")
        if not (user and colon and password):
            raise SystemExit(
                f"{variable} must be user:password with a non-empty user and password"
                " (comma-separate several)"
            )
        found[user] = password
    return found


def credentials(header: str) -> tuple[str | None, str | None]:
    """(user, password) from an `Authorization: Basic ...` header's value;
    (None, None) for anything else, which no login matches."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else (None, None)


def authenticated(known: dict[str, str], user: str | None, password: str | None) -> bool:
    """Whether `user` and `password` are one of the `known` logins; the
    password is compared in constant time."""
    expected = known.get(user or "")
    return expected is not None and hmac.compare_digest(
        (password or "").encode(), expected.encode()
    )
