"""HTTP basic-auth logins from a setting ("user:password", comma-separated),
for the operator pages that have no accounts of their own (the console).

A login with an empty user or password (`:`, `admin:`) would look protected
and let in anyone who guesses, so it stops the process at start, as an unset
setting does: these pages show and change what only operators may.
"""

from __future__ import annotations

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


def authenticated(known: dict[str, str], user: str | None, password: str | None) -> bool:
    """Whether `user` and `password` are one of the `known` logins; the
    password is compared in constant time."""
    expected = known.get(user or "")
    return expected is not None and hmac.compare_digest(
        (password or "").encode(), expected.encode()
    )
