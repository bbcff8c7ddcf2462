"""Who may use the console, and that each action is theirs.

- Every request needs one of CONSOLE_BASIC_AUTH's logins (HTTP basic auth,
  as Flower): the user is the operator, named in the audit row of each of
  their actions.
- Every POST carries the login's CSRF token in a hidden field, and, when
  the browser says where the form came from (Origin), comes from this host.
  A browser sends basic-auth credentials with any request to this origin,
  a cross-site form's included; the token is what such a form cannot know:
  an HMAC of the operator's name under a key derived from the logins
  (another site cannot read our pages to learn it). It is one token per
  login, and changes when the logins do.
- Responses are never framed (clickjacking of the action buttons), run only
  our own script, and submit forms only to us.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import NoReturn
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, g, render_template, request

from veza import basic_auth

REALM = 'Basic realm="veza console", charset="UTF-8"'
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def secret(logins: str) -> bytes:
    """The key of the console's signatures (session cookie, CSRF tokens),
    derived from the logins, never the logins themselves."""
    return hashlib.sha256(b"veza-console:" + logins.encode()).digest()


def csrf_token() -> str:
    """The signed-in operator's token, for the hidden field of every form."""
    key: bytes = current_app.config["CONSOLE_KEY"]
    return hmac.new(key, b"csrf:" + g.operator.encode(), "sha256").hexdigest()


def operator() -> str:
    """The signed-in operator's name (their basic-auth user)."""
    name: str = g.operator
    return name


def install(app: Flask, logins: dict[str, str]) -> None:
    @app.before_request
    def _signed_in() -> Response | None:
        given = request.authorization
        user = given.username if given else None
        if not basic_auth.authenticated(logins, user, given.password if given else None):
            response = Response("sign in with a console login\n", 401, mimetype="text/plain")
            response.headers["WWW-Authenticate"] = REALM
            return response
        g.operator = user
        return None

    @app.before_request
    def _own_forms_only() -> None:
        if request.method != "POST":
            return
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            refuse(f"this form was sent from {origin}, not from the console")
        if not hmac.compare_digest(request.form.get("csrf_token", ""), csrf_token()):
            refuse("this form's CSRF token is missing or wrong: reload the console and try again")

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        # Operational data: never kept by a browser or a proxy.
        response.headers["Cache-Control"] = "no-store"
        return response

    app.jinja_env.globals.update(csrf_token=csrf_token, operator=operator)


def refuse(reason: str, status: int = 403) -> NoReturn:
    """End the request with `status` and a page saying why."""
    abort(Response(render_template("refused.html", reason=reason), status))
