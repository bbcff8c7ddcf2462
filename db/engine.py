"""Engine and session factory, configured from DATABASE_URL, and the session
settings every connection of the project carries.

Every connection, pooled (SQLAlchemy) or raw (`psycopg.connect(libpq_url())`),
is made with `connect_options()`: its TimeZone is UTC, and it has a
statement_timeout, an idle_in_transaction_session_timeout and a
connect_timeout chosen by the kind of work being done (KINDS). A process
declares its kind with `set_kind` (the API, the relay, a maintenance task);
everything else is a worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sqlalchemy import CursorResult, Engine, Result, create_engine
from sqlalchemy.orm import Session, sessionmaker

from veza.settings import get_settings

# libpq puts PGTZ into the startup packet after the `options` below, so a
# PGTZ in the environment would beat our TimeZone=UTC and every timestamp
# would be read and written in that zone.
os.environ.pop("PGTZ", None)


@dataclass(frozen=True)
class Bounds:
    """How long a statement may run, a transaction may sit idle (both in
    milliseconds, 0 for no limit) and a connection attempt may take (in
    seconds, libpq's unit)."""

    statement_timeout_ms: int
    idle_in_transaction_timeout_ms: int
    connect_timeout_seconds: int


# The defaults per kind of work. A killed process (a task at its hard time
# limit) leaves its backend running its statement: statement_timeout is what
# ends it. An idle transaction holds its row locks: the idle bound ends it.
DEFAULT_BOUNDS = {
    # Requests: gunicorn kills a worker after 30 s; a statement that needs
    # 10 s has failed its user already.
    "api": Bounds(10_000, 10_000, 5),
    # The relay's statements are small; its transactions lock outbox rows.
    "relay": Bounds(10_000, 10_000, 5),
    # Tasks: half the shortest soft time limit (60 s, veza/limits.py), so a
    # task meets a database error it retries, never SoftTimeLimitExceeded.
    "worker": Bounds(30_000, 30_000, 5),
    # Maintenance (and migrations): partition detaches wait for every
    # transaction using the partition, room_stats refreshes scan everything;
    # half the maintenance soft time limit (30 min).
    "maintenance": Bounds(900_000, 60_000, 10),
}
KINDS = tuple(DEFAULT_BOUNDS)

_kind = "worker"


def set_kind(kind: str) -> str:
    """Make connections opened from now on carry `kind`'s bounds; returns
    the kind it replaces (a Celery task restores it when it ends)."""
    global _kind
    if kind not in DEFAULT_BOUNDS:
        raise ValueError(f"unknown kind of work {kind!r}; one of {KINDS}")
    previous, _kind = _kind, kind
    return previous


def bounds(kind: str | None = None) -> Bounds:
    """`kind`'s bounds (the current kind's by default):
    DB_STATEMENT_TIMEOUT_MS_<KIND>, DB_IDLE_IN_TRANSACTION_TIMEOUT_MS_<KIND>
    and DB_CONNECT_TIMEOUT_SECONDS_<KIND> from the settings, else the
    defaults."""
    kind = kind or _kind
    default = DEFAULT_BOUNDS[kind]

    def setting(name: str, value: int) -> int:
        configured = getattr(get_settings(), f"{name}_{kind}".lower())
        return value if configured is None else configured

    return Bounds(
        setting("DB_STATEMENT_TIMEOUT_MS", default.statement_timeout_ms),
        setting("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default.idle_in_transaction_timeout_ms),
        setting("DB_CONNECT_TIMEOUT_SECONDS", default.connect_timeout_seconds),
    )


def connect_options(url: str | None = None, kind: str | None = None) -> dict[str, str]:
    """The libpq connection parameters of `url` (DATABASE_URL) with the
    project's session settings added. Parameters the URL sets itself win,
    and its own `options` come after ours (so a GUC it sets wins too)."""
    limits = bounds(kind)
    options = " ".join(
        f"-c {name}={value}"
        for name, value in (
            ("TimeZone", "UTC"),
            ("statement_timeout", limits.statement_timeout_ms),
            ("idle_in_transaction_session_timeout", limits.idle_in_transaction_timeout_ms),
        )
    )
    own = dict(parse_qsl(urlsplit(url or database_url()).query))
    if "options" in own:
        options = f"{options} {own.pop('options')}"
    return {"connect_timeout": str(limits.connect_timeout_seconds), **own, "options": options}


def database_url() -> str:
    """DATABASE_URL, with a bare postgresql:// scheme pointed at psycopg 3
    (veza/settings.py)."""
    return get_settings().database_url


def libpq_url(url: str | None = None, kind: str | None = None) -> str:
    """The same database as a plain libpq URL, for raw psycopg connections,
    carrying connect_options() (UTC, and the bounds of the current kind)."""
    parts = urlsplit((url or database_url()).replace("postgresql+psycopg://", "postgresql://", 1))
    # %20, not +: libpq's URI parser only percent-decodes.
    query = urlencode(connect_options(url, kind), quote_via=quote)
    return urlunsplit(parts._replace(query=query))


_engines: dict[tuple[str, str], Engine] = {}
_sessionmakers: dict[tuple[str, str], sessionmaker[Session]] = {}


def get_engine(url: str | None = None) -> Engine:
    """The pool for `url` and the current kind: a pooled connection keeps
    the bounds it was opened with, so each kind has its own pool."""
    key = (url or database_url(), _kind)
    if key not in _engines:
        # pool_pre_ping: a worker must survive a PostgreSQL restart without
        # failing the first task that picks up a dead pooled connection.
        _engines[key] = create_engine(
            key[0],
            connect_args=connect_options(key[0]),
            pool_pre_ping=True,
            pool_size=get_settings().db_pool_size,
            max_overflow=get_settings().db_max_overflow,
        )
    return _engines[key]


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: commit when the block ends, roll back if it raises."""
    key = (url or database_url(), _kind)
    if key not in _sessionmakers:
        _sessionmakers[key] = sessionmaker(get_engine(key[0]), expire_on_commit=False)
    with _sessionmakers[key]() as session, session.begin():
        yield session


def dispose_engines() -> None:
    """Forget pooled connections inherited through fork (Celery prefork
    children), without closing the parent's sockets."""
    for engine in _engines.values():
        engine.dispose(close=False)


def affected(result: Result[Any]) -> int:
    """The rows an INSERT, UPDATE or DELETE changed. Session.execute is typed
    as returning a Result whatever the statement; a DML statement's result is
    a CursorResult, the kind that has a rowcount."""
    return cast("CursorResult[Any]", result).rowcount
