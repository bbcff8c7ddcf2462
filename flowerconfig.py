"""Flower's settings (read by `celery -A worker flower` from the working
directory). Flower has no authentication by default and its pages show task
arguments, so it refuses to start without credentials here."""

import hashlib
import os

_auth = os.environ.get("FLOWER_BASIC_AUTH", "")
if ":" not in _auth:
    raise SystemExit("FLOWER_BASIC_AUTH must be set to user:password (comma-separate several)")
basic_auth = _auth.split(",")

# An explicit secret, so that sessions survive restarts and every Flower
# behind a load balancer signs cookies the same way.
# Without FLOWER_COOKIE_SECRET it is derived from the credentials (never the
# credentials themselves), so it still changes when they do.
cookie_secret = os.environ.get("FLOWER_COOKIE_SECRET") or hashlib.sha256(
    b"veza-flower-cookie:" + _auth.encode()
).hexdigest()

address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")
port = int(os.environ.get("FLOWER_PORT", "5555"))
# Bounded memory: Flower keeps this many tasks in its in-memory state.
max_tasks = int(os.environ.get("FLOWER_MAX_TASKS", "10000"))
purge_offline_workers = 300
