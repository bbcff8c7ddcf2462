"""/api/v1: every blueprint of the write API, and its OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify

from api import (
    auth,
    conversations,
    files,
    mentions,
    messages,
    moderation,
    notifications,
    request_context,
    rooms,
    search,
    sessions,
    two_factor,
    users,
)
from api.schemas import ErrorBody
from api.spec import API_PREFIX, IdConverter, openapi_document

BLUEPRINTS = (
    auth.bp,
    sessions.bp,
    two_factor.bp,
    users.bp,
    rooms.bp,
    messages.bp,
    moderation.bp,
    conversations.bp,
    mentions.bp,
    notifications.bp,
    search.bp,
    files.bp,
)

docs = Blueprint("openapi", __name__)


@docs.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(openapi_document([ErrorBody]))


def register(app: Flask) -> None:
    app.url_map.converters["id"] = IdConverter
    request_context.install(app)
    for bp in (*BLUEPRINTS, docs):
        app.register_blueprint(bp, url_prefix=API_PREFIX)
