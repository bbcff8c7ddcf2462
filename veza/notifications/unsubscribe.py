"""The one-click unsubscribe link of a missed-message email (RFC 8058).

The link carries a token naming the user, signed with NOTIFY_SIGNING_KEY by
itsdangerous (what Flask signs its sessions with): the link alone turns that
user's emails off, without a login, and nobody can make one for another
user. It does not expire: an unsubscribe link in an old email must still
work. Rotating the key voids every link sent before.
"""

from __future__ import annotations

from urllib.parse import urlencode

from itsdangerous import BadSignature, URLSafeSerializer

from veza.settings import get_settings

# Where the API answers the link (api/notifications.py).
UNSUBSCRIBE_PATH = "/api/v1/notifications/unsubscribe"
# Keeps a token of this purpose from being accepted for any other.
SALT = "veza.notifications.unsubscribe"


def _serializer() -> URLSafeSerializer | None:
    key = get_settings().notify_signing_key
    return URLSafeSerializer(key.get_secret_value(), salt=SALT) if key else None


def unsubscribe_url(user_id: int) -> str:
    serializer = _serializer()
    if serializer is None:  # the settings refuse SMTP_HOST without a key
        raise RuntimeError("NOTIFY_SIGNING_KEY is not set")
    token = serializer.dumps(user_id)
    base = get_settings().public_url.rstrip("/")
    return f"{base}{UNSUBSCRIBE_PATH}?{urlencode({'token': token})}"


def user_of(token: str) -> int | None:
    """The user a token was signed for; None for a token that was not
    signed with the key (forged, mangled, or from before a rotation)."""
    serializer = _serializer()
    if serializer is None:
        return None
    try:
        user_id = serializer.loads(token)
    except BadSignature:
        return None
    return user_id if isinstance(user_id, int) else None
