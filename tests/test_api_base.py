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
    app = create_app({"REDIS_URL": "redis://127.0.0.1:1/0"})
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["down"] == ["redis"]
    assert response.json["checks"]["postgres"] == "ok"


@pytest.mark.parametrize(
    "method, path, status",
    [("get", "/no/such/path", 404), ("post", "/healthz", 405)],
)
def test_errors_are_json(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.is_json
    assert set(response.json["error"]) == {"code", "message", "fields"}
