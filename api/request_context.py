"""Per-request identity: a request id (the client's X-Request-ID when it is a
UUID, else a new one), returned in the response header and stored with the
audit rows and outbox rows the request writes, so one id follows a request
from the HTTP log to the task it caused."""

from __future__ import annotations

import ipaddress
import uuid
from typing import cast

from flask import Flask, Response, g, request

from veza.logs import request_id_var

HEADER = "X-Request-ID"


def request_id() -> uuid.UUID:
    return cast(uuid.UUID, g.request_id)  # set before every request (install, below)


def client_ip() -> str | None:
    """The peer's address, as INET accepts it (a proxy in front would set
    ProxyFix so that this is the client's)."""
    try:
        return str(ipaddress.ip_address(request.remote_addr or ""))
    except ValueError:
        return None


def user_agent() -> str | None:
    return request.headers.get("User-Agent", "")[:1000] or None


def install(app: Flask) -> None:
    @app.before_request
    def _assign_request_id() -> None:
        try:
            g.request_id = uuid.UUID(request.headers.get(HEADER, ""))
        except ValueError:
            g.request_id = uuid.uuid4()
        # Every log line of this request carries the id (veza/logs.py).
        g.log_token = request_id_var.set(str(g.request_id))

    @app.teardown_request
    def _unbind_request_id(_: BaseException | None) -> None:
        if "log_token" in g:
            request_id_var.reset(g.log_token)

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        if "request_id" in g:
            response.headers[HEADER] = str(g.request_id)
        return response
