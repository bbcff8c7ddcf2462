"""Flower's settings (read by `celery -A worker flower` from the working
directory). Flower has no authentication by default and its pages show task
arguments, so it refuses to start without credentials here."""

import hashlib

from veza.settings import get_settings

_settings = get_settings()
_auth = _settings.flower_basic_auth or ""
if ":" not in _auth:
    raise SystemExit("FLOWER_BASIC_AUTH must be set to user:password (comma-separate several)")
basic_auth = _auth.split(",")

# An explicit secret, so that sessions survive restarts and every Flower
# behind a load balancer signs cookies the same way.
# Without FLOWER_COOKIE_SECRET it is derived from the credentials (never the
# credentials themselves), so it still changes when they do.
cookie_secret = (
    _settings.flower_cookie_secret
    or hashlib.sha256(b"veza-flower-cookie:" + _auth.encode()).hexdigest()
)

address = _settings.flower_address
port = _settings.flower_port
# Bounded memory: Flower keeps this many tasks in its in-memory state.
max_tasks = _settings.flower_max_tasks
purge_offline_workers = 300
