"""What every response carries and never carries, through the Flask test
client (tests/test_gunicorn.py checks the same through gunicorn)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.api_helpers import API


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", f"{API}/openapi.json", 200),
        ("GET", f"{API}/rooms/1", 401),
        ("GET", f"{API}/no-such-route", 404),
        ("DELETE", f"{API}/auth/login", 405),
        ("POST", f"{API}/auth/register", 422),
    ],
)
def test_every_response_says_nosniff_and_names_no_server(app, method, path, status):
    response = app.test_client().open(path, method=method, json={})
    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Server" not in response.headers
    assert response.is_json


def test_a_database_refusal_answers_a_generic_422_without_postgres_text(db, redis_client):
    """A value PostgreSQL refuses (here an integer cast it cannot make)
    gives a stable code and message; the database's own words (which name
    types, values, columns) stay in the log."""
    from api import create_app
    from api.spec import run_once_per_partition

    app = create_app({"TESTING": True})

    @app.get("/_probe/bad-value")
    def bad_value():
        run_once_per_partition(lambda session: session.execute(text("SELECT 'x'::int")))
        return {}

    response = app.test_client().get("/_probe/bad-value")
    assert response.status_code == 422
    assert response.json["error"] == {
        "code": "invalid_value",
        "message": "A value is not acceptable.",
        "fields": {},
    }
    assert "integer" not in response.get_data(as_text=True)
