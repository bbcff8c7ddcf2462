"""JSON errors: every error body is {"error": {"code", "message", "fields"}}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Every 404 says this and nothing more: an unknown id, a hidden one, an
# out-of-range one and an unknown path are indistinguishable (api/access.py).
NOT_FOUND_CODE = "not_found"
NOT_FOUND_MESSAGE = "Not found."


class ApiError(Exception):
    """An error the client can act on; raised anywhere in a request."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    fields: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "fields": fields or {}}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return error_response(err.status, err.code, err.message, err.fields, err.headers)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        if isinstance(err.response, Response):
            return err.response  # built by us already (the rate limits' 429)
        if err.code == 404:
            return error_response(404, NOT_FOUND_CODE, NOT_FOUND_MESSAGE)
        code = (err.name or "error").lower().replace(" ", "_")
        allow = err.get_response().headers.get("Allow")
        headers = {"Allow": allow} if allow else None
        return error_response(err.code or 500, code, err.description or err.name, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.error("unhandled error", exc_info=err)
        return error_response(500, "internal_error", "An unexpected error occurred.")
