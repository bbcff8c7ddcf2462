"""The Flask application factory: JSON errors and health."""

from __future__ import annotations

import pytest


@pytest.fixture
def client(database_url, redis_client):
    from api import create_app

    return create_app({"TESTING": True}).test_client()


def test_health_reports_both_dependencies(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["checks"] == {"postgres": "ok", "redis": "ok"}


def test_health_names_the_dependency_that_is_down(database_url):
    from api import create_app

    # A real Redis URL where nothing listens: the probe really fails.
    app = create_app({"REDIS_URL": "redis://127.0.0.1:1/0", "TESTING": True})
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["down"] == ["redis"]
    assert response.json["checks"]["postgres"] == "ok"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("get", "/no/such/path", 404), ("post", "/healthz", 405)],
)
def test_errors_are_json(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.is_json
    assert set(response.json["error"]) == {"code", "message", "fields"}


@pytest.fixture
def probe_app(database_url):
    """The real factory, plus probe routes that fail the ways handlers do."""
    from flask import request

    from api import create_app

    app = create_app({"MAX_CONTENT_LENGTH": 1024, "TESTING": True})

    @app.post("/_probe/json")
    def read_json():
        return {"got": request.get_json()}

    @app.get("/_probe/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    return app


def test_malformed_json_is_a_json_400(probe_app):
    response = probe_app.test_client().post(
        "/_probe/json", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"


def test_an_oversized_body_is_a_json_413(probe_app):
    response = probe_app.test_client().post(
        "/_probe/json", data="x" * 4096, content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_entity_too_large"


def test_an_unexpected_error_is_a_json_500_without_internals(probe_app):
    response = probe_app.test_client().get("/_probe/boom")
    assert response.status_code == 500
    assert response.json["error"]["code"] == "internal_error"
    assert "secret" not in response.get_data(as_text=True)
