"""Flower's settings (read by `celery -A worker flower` from the working
directory). Flower has no authentication by default and its pages show task
arguments, so it refuses to start without credentials here."""

import hashlib

from veza.basic_auth import logins
from veza.logs import configure_logging
from veza.settings import get_settings

_settings = get_settings()

# Flower logs through tornado, which gave the root logger a plain-text
# handler when Flower parsed its command line, before reading this file:
# the JSON handler of every process replaces it, and "none" keeps tornado
# from touching the logging again (its parse callback would reset the level).
configure_logging(_settings.log_level)
logging = "none"
_auth = _settings.flower_basic_auth or ""
# Exits with a clear message unless each login has a non-empty user and
# password (veza/basic_auth.py); Flower takes them as "user:password" pairs.
basic_auth = [f"{user}:{password}" for user, password in logins("FLOWER_BASIC_AUTH", _auth).items()]

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


def _metrics_behind_auth() -> None:
    """Flower 2.2 serves /metrics (task names, worker names, counts) with no
    check at all: its basic_auth is enforced only by handlers marked
    @tornado.web.authenticated, and Metrics is not, nor is there an option.
    Marking it here makes a scrape give the same credentials as a browser.
    /healthcheck stays open (it answers "OK" and nothing else)."""
    import tornado.web
    from flower.views.monitor import Metrics

    Metrics.get = tornado.web.authenticated(Metrics.get)


_metrics_behind_auth()
