"""Headers every response carries, errors included: the browser must never
guess a type other than the one sent (`nosniff`), JSON bodies included.
The Server banner is blanked by gunicorn's configuration
(deploy/gunicorn.conf.py): Flask never sets one."""

from __future__ import annotations

from flask import Flask, Response


def install(app: Flask) -> None:
    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
