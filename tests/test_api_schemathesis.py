"""Property-based run of every operation in /api/v1/openapi.json:
generated requests (valid and invalid) must never get a 5xx, and every
response must match the schema the document declares for it."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_helpers import ApiClient

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture
def openapi(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


@pytest.fixture
def bearer(api: ApiClient) -> dict[str, str]:
    """A user with a room, a message and a DM, so that small generated ids
    sometimes reach real rows rather than only 404s."""
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.say(room, alice, "hello @" + bob.username)
    api.post("/conversations", alice, json={"user_id": bob.id})
    return {"Authorization": f"Bearer {alice.token}"}


schema = schemathesis.pytest.from_fixture("openapi")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case, bearer):
    if case.operation.path == "/auth/logout":
        return  # would end the session the other generated requests use
    case.call_and_validate(headers=bearer, checks=CHECKS)


JSON_TYPES = {"integer": int, "number": (int, float), "string": str, "boolean": bool}


def test_every_parameter_default_is_of_its_own_type(app):
    """A default the parameter's own schema refuses makes the document
    invalid (openapi-spec-validator rejected `before`'s `default: null` on
    an integer)."""
    document = app.test_client().get("/api/v1/openapi.json").json
    defaults = {
        (path, method, param["name"]): (param["schema"]["default"], param["schema"].get("type"))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for param in operation.get("parameters", [])
        if "default" in param["schema"]
    }
    wrong = {
        where: default
        for where, (default, kind) in defaults.items()
        if kind in JSON_TYPES and not isinstance(default, JSON_TYPES[kind])
    }
    assert defaults, "no parameter declares a default: the check checks nothing"
    assert wrong == {}


def test_the_openapi_document_passes_openapi_spec_validator(app):
    """The document clients generate code from is valid OpenAPI, as the
    validator of its own version reads it (it raises on the first error)."""
    from openapi_spec_validator import validate

    validate(app.test_client().get("/api/v1/openapi.json").json)
