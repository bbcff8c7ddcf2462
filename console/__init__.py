"""The operator console: a small server-rendered page over the maintenance
runs, the file pipeline and the outbox, with the actions an operator needs
(retry, replay, run now, cancel). `veza console` serves it under gunicorn on
CONSOLE_ADDRESS:CONSOLE_PORT, behind CONSOLE_BASIC_AUTH (docs/operations.md,
"The console").

Like the API it never loads Celery: work it asks for goes through the
outbox, and the relay sends it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from console import actions, guard, pages
from db.engine import set_kind
from veza import basic_auth
from veza.logs import configure_logging
from veza.settings import get_settings


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The console app; exits with a clear message unless CONSOLE_BASIC_AUTH
    holds at least one login with a non-empty user and password."""
    settings = get_settings()
    credentials = settings.console_basic_auth or ""
    logins = basic_auth.logins("CONSOLE_BASIC_AUTH", credentials)
    app = Flask(__name__)
    app.secret_key = guard.secret(credentials)
    app.config.update(
        CONSOLE_KEY=app.secret_key,
        SESSION_COOKIE_NAME="veza_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        # Nothing the console takes is larger than a form of a few fields.
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    if config:
        app.config.update(config)
    if not app.testing:
        configure_logging(settings.log_level)
        set_kind("api")  # a request's database bounds (db/engine.py)
    guard.install(app, logins)
    app.register_blueprint(pages.bp)
    app.register_blueprint(actions.bp)
    return app
