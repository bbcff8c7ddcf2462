"""Rate limits on the routes an attacker would hammer: every route under
/auth/ and every write (POST, PATCH, PUT, DELETE), each per client IP and
per user (the bearer token's user, when the request carries a valid one).

The limits are chosen by category (path prefix and method), never per view:
a route added under /auth/ or a new write is covered the day it exists.
Counters live in Redis (limits' Redis storage, shared by every gunicorn
worker and every API host). When Redis cannot be reached the limits fail
open: the request is served and the failure logged, because writes must not
depend on Redis (the outbox makes them durable without it;
docs/operations.md). A breach answers 429 with Retry-After and the usual
JSON error body.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from flask_limiter import Limit, Limiter, RequestLimit
from sqlalchemy import select

from api.errors import error_response
from api.request_context import client_ip
from api.sessions import token_hash
from api.spec import API_PREFIX
from db.engine import session_scope
from db.models import UserSession
from veza.redis_store import sentinel_kwargs
from veza.settings import get_settings, sentinels_of

AUTH_PREFIX = f"{API_PREFIX}/auth/"
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# A Redis that hangs costs a request about this long (an int: limits'
# storage options are str or int), not the broker's timeout: the limit is
# then skipped (fail open).
STORAGE_TIMEOUT_SECONDS = 1


def is_auth_route() -> bool:
    return request.path.startswith(AUTH_PREFIX)


def is_write() -> bool:
    return request.method in WRITE_METHODS and not is_auth_route()


def ip_key() -> str:
    return client_ip() or "unknown"


def bearer_user_id() -> int | None:
    """The user of the request's bearer token, if it names a live session;
    looked up once per request (authentication proper happens in the view)."""
    if "rate_limit_user" not in g:
        g.rate_limit_user = _lookup_bearer_user()
    user_id: int | None = g.rate_limit_user
    return user_id


def _lookup_bearer_user() -> int | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    with session_scope() as session:
        return session.scalar(
            select(UserSession.user_id).where(
                UserSession.token_hash == token_hash(token.strip()),
                UserSession.is_active.is_(True),
            )
        )


def user_key() -> str:
    return str(bearer_user_id())


def _category_limits() -> list[str | Callable[[], str] | Limit]:
    """Four shared buckets: auth and writes, each per IP and per user."""
    settings = get_settings()

    def anonymous() -> bool:
        return bearer_user_id() is None

    def per_ip(limit: str, scope: str, outside: Callable[[], bool]) -> Limit:
        return Limit(limit, key_function=ip_key, scope=scope, shared=True, exempt_when=outside)

    def per_user(limit: str, scope: str, outside: Callable[[], bool]) -> Limit:
        return Limit(
            limit,
            key_function=user_key,
            scope=scope,
            shared=True,
            exempt_when=lambda: outside() or anonymous(),
        )

    def not_auth() -> bool:
        return not is_auth_route()

    def not_write() -> bool:
        return not is_write()

    return [
        per_ip(settings.rate_limit_auth_per_ip, "auth-ip", not_auth),
        per_user(settings.rate_limit_auth_per_user, "auth-user", not_auth),
        per_ip(settings.rate_limit_writes_per_ip, "writes-ip", not_write),
        per_user(settings.rate_limit_writes_per_user, "writes-user", not_write),
    ]


def too_many_requests(limit: RequestLimit) -> Response:
    retry_after = max(1, limit.reset_at - int(time.time()))
    return error_response(
        429,
        "rate_limited",
        "Too many requests; retry after the number of seconds in Retry-After.",
        headers={"Retry-After": str(retry_after)},
    )


def storage(url: str) -> tuple[str, dict[str, Any]]:
    """limits' storage URI and options for the Redis `url` names. Sentinels
    (`sentinel://`, as REDIS_URL names them) become limits' own form of
    them, `redis+sentinel://HOST:PORT,HOST:PORT/MASTER`, with the database
    and passwords as options: counted on the primary, read there too (a
    replica may lag it by the very requests being counted)."""
    bounds: dict[str, Any] = {
        "socket_timeout": STORAGE_TIMEOUT_SECONDS,
        "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
    }
    found = sentinels_of(url)
    if found is None:
        return url, bounds
    hosts = ",".join(f"{host}:{port}" for host, port in found.addresses)
    credentials = {"username": found.username, "password": found.password}
    return f"redis+sentinel://{hosts}/{get_settings().redis_sentinel_master}", {
        **bounds,
        **{name: value for name, value in credentials.items() if value is not None},
        "db": found.db,
        "use_replicas": False,
        # Explicit, or limits would give the Sentinels the primary's password.
        "sentinel_kwargs": sentinel_kwargs(STORAGE_TIMEOUT_SECONDS),
    }


def install(app: Flask) -> Limiter:
    settings = get_settings()
    storage_uri, storage_options = storage(settings.rate_limit_storage_url or settings.redis_url)
    return Limiter(
        ip_key,
        app=app,
        default_limits=_category_limits(),
        storage_uri=storage_uri,
        storage_options=storage_options,
        strategy="moving-window",
        swallow_errors=True,  # fail open when Redis is down (module docstring)
        on_breach=too_many_requests,
        key_prefix="veza-rate",
        enabled=settings.rate_limit_enabled,
    )
