"""Test data shared across test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from db.partitions import PARTITIONED_TABLES, month_of, months_between
from tests.conftest import ADMIN_URL
from veza.settings import reload_settings


@contextmanager
def fresh_database(suffix: str) -> Iterator[str]:
    """An empty database of its own, made DATABASE_URL for the block (so
    that `alembic` and the project's code use it), dropped afterwards;
    yields its URL."""
    name = f"veza_test_{os.getpid()}_{suffix}"
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    env_url = os.environ["DATABASE_URL"]
    os.environ["DATABASE_URL"] = url
    reload_settings()
    try:
        yield url
    finally:
        os.environ["DATABASE_URL"] = env_url
        reload_settings()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def partitions_since(db, age: str) -> None:
    """Make, through the project's own function, the monthly partitions
    that rows dated from `age` ago (an SQL interval, '8 days') until now
    need. "8 days ago" is last month on the 1st to the 8th: a test that
    backdates rows calls this rather than trusting the calendar."""
    start, now = db.execute("SELECT now() - CAST(%s AS interval), now()", (age,)).fetchone()
    first = month_of(start)
    for table in PARTITIONED_TABLES:
        db.execute("SELECT create_monthly_partitions(CAST(%s AS regclass), %s, %s)",
                   (table, first, months_between(first, month_of(now)) + 1))
