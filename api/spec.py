"""One declaration per endpoint: the route, its schemas, and its OpenAPI entry.

`operation(bp, "POST", "/rooms", body=RoomCreate, responses={201: RoomOut})`
registers a Flask view that
  - authenticates the bearer token (unless auth=False),
  - validates the JSON body / query string against pydantic models,
  - runs the view in ONE database transaction (committed when the view
    returns, rolled back when it raises, so no half-written row survives),
  - retries once after creating a missing monthly partition,
  - serialises a returned pydantic model as JSON,
and records the same declaration for GET /api/v1/openapi.json, so the
document and the validation cannot drift apart.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request
from psycopg import errors as pg_errors
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session
from werkzeug.exceptions import NotFound
from werkzeug.routing import BaseConverter

from api.errors import ApiError
from db.engine import session_scope
from db.partitions import creating_missing_partitions

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MAX_ID = 2**31 - 1  # ids are PostgreSQL integers: larger ones cannot exist
# A JSON body is a few KB at most (content <= 4000 characters); only uploads
# may be large. Werkzeug enforces this while reading and answers 413.
MAX_JSON_BYTES = 64 * 1024


class IdConverter(BaseConverter):
    """A positive 32-bit id. A larger number cannot be an id: it answers the
    same 404 as an unknown id, and never reaches PostgreSQL as an
    out-of-range integer. (Raising NotFound rather than a routing
    ValidationError keeps werkzeug from trying the path's other methods
    and answering 405.)"""

    regex = r"[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_ID:
            raise NotFound()
        return number

    def to_url(self, value: int) -> str:
        return str(value)


PATH_PARAM_SCHEMAS = {
    "id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "uuid": {"type": "string", "format": "uuid"},
    "string": {"type": "string", "minLength": 1},
}


@dataclass
class Operation:
    method: str
    rule: str
    summary: str
    tag: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    responses: dict[int, type[BaseModel] | None]
    auth: bool
    multipart: dict[str, Any] | None = None
    binary: bool = False
    errors: tuple[int, ...] = ()


OPERATIONS: list[Operation] = []

# What a view returns: a body (sent with the operation's first status), a
# (body or None, status) pair, or a ready Response (a download).
ViewResult = BaseModel | tuple[BaseModel | None, int] | Response
View = TypeVar("View", bound=Callable[..., ViewResult])


def operation(
    bp: Blueprint,
    method: str,
    rule: str,
    *,
    summary: str,
    responses: dict[int, type[BaseModel] | None],
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    auth: bool = True,
    multipart: dict[str, Any] | None = None,
    binary: bool = False,
    errors: tuple[int, ...] = (),
) -> Callable[[View], View]:
    """Declare and register an endpoint. The view is called as
    view(session, **path_args[, body=...][, query=...])."""
    op = Operation(
        method, rule, summary, bp.name, body, query, responses, auth, multipart, binary, errors
    )
    OPERATIONS.append(op)

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def endpoint(**path_args: Any) -> Response:
            if op.multipart:
                # Receive the upload before any transaction opens: a slow
                # client must not hold a pooled connection idle in a
                # transaction (Werkzeug spools the body; the 413 for a
                # declared length over the limit comes before any read).
                request.files  # noqa: B018  (parsing is the side effect wanted)
            result = run_once_per_partition(lambda s: _call(view, op, s, path_args))
            return to_response(result, op)

        bp.add_url_rule(rule, endpoint=view.__name__, view_func=endpoint, methods=[method])
        return view

    return decorator


def _call(
    view: Callable[..., ViewResult], op: Operation, session: Session, path_args: dict[str, Any]
) -> ViewResult:
    """Authenticate first (no validation detail for anonymous callers), then
    validate, then run the view."""
    if op.auth:
        from api.auth import authenticate

        authenticate(session)
    kwargs = dict(path_args)
    if op.body is not None:
        kwargs["body"] = parse_body(op.body)
    if op.query is not None:
        kwargs["query"] = parse_query(op.query)
    return view(session, **kwargs)


def run_once_per_partition(work: Callable[[Session], Any]) -> Any:
    """Run `work` in one transaction. If an insert found no monthly
    partition for its row (there is deliberately no DEFAULT partition),
    create that month's partition and run `work` again (db/partitions.py).
    Database refusals become 4xx, never 500."""

    def transaction() -> Any:
        with session_scope() as session:
            return work(session)

    try:
        return creating_missing_partitions(transaction)
    except sa_exc.IntegrityError as exc:
        raise_constraint_error(exc)
    except sa_exc.DataError as exc:
        # PostgreSQL's text names columns, types and values of the schema:
        # it goes to the log (with the request id), never to the client.
        log.warning("database refused a value: %s", str(exc.orig).splitlines()[0])
        raise ApiError(422, "invalid_value", "A value is not acceptable.") from exc


# Unique constraints on users (idx_users_*_lower: names and emails in any case).
ACCOUNT_CONSTRAINTS = {
    "users_username_key",
    "users_email_key",
    "idx_users_email_lower",
    "idx_users_username_lower",
}


def raise_constraint_error(exc: sa_exc.IntegrityError) -> None:
    """The database is the last line of validation: a constraint the schema
    checks missed still answers 4xx, never 500 (the transaction is already
    rolled back)."""
    orig = exc.orig
    constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
    if isinstance(orig, pg_errors.UniqueViolation):
        if constraint in ACCOUNT_CONSTRAINTS:  # a register that lost a race
            raise ApiError(
                409, "account_exists", "That username or email is already registered."
            ) from exc
        raise ApiError(409, "conflict", "This already exists.", {"constraint": constraint}) from exc
    raise ApiError(
        422,
        "constraint_violated",
        "A value breaks a rule of the data model.",
        {"constraint": constraint},
    ) from exc


def validation_fields(err: ValidationError) -> dict[str, str]:
    return {".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in err.errors()}


def parse_body(model: type[BaseModel]) -> BaseModel:
    if not request.is_json:
        raise ApiError(400, "invalid_content_type", "The body must be JSON (application/json).")
    request.max_content_length = MAX_JSON_BYTES
    try:
        return model.model_validate_json(request.get_data() or b"")
    except ValidationError as err:
        if any(e["type"] == "json_invalid" for e in err.errors()):
            raise ApiError(400, "malformed_json", "The body is not valid JSON.") from err
        raise ApiError(
            422, "validation_failed", "The body is not valid.", validation_fields(err)
        ) from err


def parse_query(model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as err:
        raise ApiError(
            422, "validation_failed", "The query string is not valid.", validation_fields(err)
        ) from err


def to_response(result: ViewResult, op: Operation) -> Response:
    if isinstance(result, Response):
        return result
    body, status = result if isinstance(result, tuple) else (result, next(iter(op.responses)))
    if body is None:
        return Response(status=status)
    response = jsonify(body.model_dump(mode="json"))
    response.status_code = status
    return response


# ---------------------------------------------------------------- OpenAPI

CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")

ERROR_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing or invalid token",
    403: "Not allowed",
    404: "Unknown or hidden",
    409: "Conflict",
    413: "Too large",
    422: "Invalid input",
    423: "Account locked",
    429: "Too many requests",
    503: "Temporarily unavailable",
    507: "Insufficient storage",
}


def openapi_document(response_models: list[type[BaseModel]]) -> dict[str, Any]:
    models = {m for op in OPERATIONS for m in (op.body, op.query) if m}
    models |= {m for op in OPERATIONS for m in op.responses.values() if m}
    models |= set(response_models)
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]]
    keyed = [(m, "validation") for m in models if _is_input(m)]
    keyed += [(m, "serialization") for m in models if not _is_input(m)]
    _, definitions = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        path = CONVERTER.sub(lambda m: "{" + m.group(2) + "}", op.rule)
        paths.setdefault(path, {})[op.method.lower()] = _operation_object(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Veza write API", "version": "1"},
        "servers": [{"url": API_PREFIX}],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _is_input(model: type[BaseModel]) -> bool:
    return any(model is op.body or model is op.query for op in OPERATIONS)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation_object(op: Operation) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method.lower()}_{op.rule}",
        "parameters": _parameters(op),
        "responses": {},
    }
    if op.auth:
        obj["security"] = [{"bearer": []}]
    if op.body is not None:
        obj["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    if op.multipart is not None:
        obj["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": op.multipart}},
        }
    for status, model in op.responses.items():
        if model is None:
            obj["responses"][str(status)] = {"description": "No content"}
        elif op.binary:
            obj["responses"][str(status)] = {
                "description": "The file's bytes",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        else:
            obj["responses"][str(status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": _ref(model)}},
            }
    statuses = set(op.errors) | {404, 422}
    if op.auth:
        statuses.add(401)
    if op.body is not None or op.multipart is not None:
        statuses.add(400)
    for status in sorted(statuses):
        obj["responses"][str(status)] = {
            "description": ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
    return obj


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_PARAM_SCHEMAS[converter or "string"],
        }
        for converter, name in CONVERTER.findall(op.rule)
    ]
    if op.query is not None:
        schema = op.query.model_json_schema()
        for name, prop in schema["properties"].items():
            prop = {k: v for k, v in prop.items() if k != "title"}
            if "anyOf" in prop:  # Optional[int]: the absent case is "not sent",
                # so neither null nor a null default is part of the parameter
                # (a default its own type refuses makes the document invalid).
                prop = next(p for p in prop.pop("anyOf") if p.get("type") != "null") | prop
                if prop.get("default", ...) is None:
                    del prop["default"]
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in schema.get("required", []),
                    "schema": prop,
                }
            )
    return params
