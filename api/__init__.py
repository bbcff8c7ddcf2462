"""The write API: a Flask application factory (`flask --app api run`)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from api import headers, rate_limits
from api.errors import register_error_handlers
from db.engine import set_kind
from veza.logs import configure_logging
from veza.settings import get_settings


class _FieldOrderJSON(DefaultJSONProvider):
    sort_keys = False  # bodies keep the order of the models' fields


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    settings = get_settings()
    # Slightly above the largest upload, so that the upload handler (which
    # counts while streaming) gives the precise 413; this is the backstop.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + 1024 * 1024
    app.config["MAX_UPLOAD_BYTES"] = settings.max_upload_bytes
    app.config["REDIS_URL"] = settings.redis_url
    app.json = _FieldOrderJSON(app)
    if config:
        app.config.update(config)
    if not app.testing:
        configure_logging(settings.log_level)
        set_kind("api")  # a request's database bounds (db/engine.py)

    register_error_handlers(app)
    headers.install(app)
    rate_limits.install(app)

    from api import health, v1

    app.register_blueprint(health.bp)
    v1.register(app)
    return app
