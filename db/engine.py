"""Engine and session factory, configured from DATABASE_URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DATABASE_URL = "postgresql+psycopg://veza:veza@127.0.0.1:5432/veza"


def database_url() -> str:
    """DATABASE_URL, with a bare postgresql:// scheme pointed at psycopg 3."""
    url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url[len(bare):]
    return url


def libpq_url(url: str | None = None) -> str:
    """The same database as a plain libpq URL, for raw psycopg connections."""
    return (url or database_url()).replace("postgresql+psycopg://", "postgresql://", 1)


_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def get_engine(url: str | None = None) -> Engine:
    url = url or database_url()
    if url not in _engines:
        # pool_pre_ping: a worker must survive a PostgreSQL restart without
        # failing the first task that picks up a dead pooled connection.
        _engines[url] = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=int(os.environ.get("DB_POOL_SIZE", "5")),
            max_overflow=int(os.environ.get("DB_MAX_OVERFLOW", "10")),
        )
    return _engines[url]


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: commit when the block ends, roll back if it raises."""
    url = url or database_url()
    if url not in _sessionmakers:
        _sessionmakers[url] = sessionmaker(get_engine(url), expire_on_commit=False)
    with _sessionmakers[url]() as session, session.begin():
        yield session


def dispose_engines() -> None:
    """Forget pooled connections inherited through fork (Celery prefork
    children), without closing the parent's sockets."""
    for engine in _engines.values():
        engine.dispose(close=False)
