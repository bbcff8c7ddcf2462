"""Test data shared across test modules: a database of one's own, the
partitions that backdated rows need (through the project's own
create_monthly_partitions), users, rooms and messages made as rows with
plain SQL (the database's triggers doing their part, no API or task in
between), and the reads the tests check their rows with.

Users made through the API, logged in, are tests/api_helpers.py's
`api.register()`; uploads as the API leaves them are tests/uploads.py's."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

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
        db.execute(
            "SELECT create_monthly_partitions(CAST(%s AS regclass), %s, %s)",
            (table, first, months_between(first, month_of(now)) + 1),
        )


def make_user(db, name: str | None = None) -> int:
    """A user named `name`, or by a name of its own when the test does not
    care which (usernames are unique)."""
    name = name or f"u{uuid.uuid4().hex[:12]}"
    return db.execute(
        "INSERT INTO users (username, email, password_hash) VALUES (%s, %s, 'x') RETURNING id",
        (name, f"{name}@example.com"),
    ).fetchone()[0]


def make_room(db, owner: int, name: str = "general", **settings) -> int:
    cols = ", ".join(["name", "owner_id", *settings])
    marks = ", ".join(["%s"] * (2 + len(settings)))
    return db.execute(
        f"INSERT INTO rooms ({cols}) VALUES ({marks}) RETURNING id",
        (name, owner, *settings.values()),
    ).fetchone()[0]


def post(
    db,
    author: int,
    room: int | None = None,
    conversation: int | None = None,
    content: str = "hello",
    created_at: datetime | None = None,
    parent=None,
) -> tuple[int, datetime]:
    """A message in a room or a conversation; returns its key (id, created_at)."""
    return db.execute(
        "INSERT INTO messages (room_id, conversation_id, author_id, content, created_at,"
        " parent_message_id, parent_created_at)"
        " VALUES (%s, %s, %s, %s, COALESCE(%s, now()), %s, %s) RETURNING id, created_at",
        (
            room,
            conversation,
            author,
            content,
            created_at,
            parent[0] if parent else None,
            parent[1] if parent else None,
        ),
    ).fetchone()


def scalar(db, sql: str, params=()):
    return db.execute(sql, params).fetchone()[0]


def outbox_row(db, row_id) -> dict:
    """The outbox row as a dict by column, {} when there is none."""
    cursor = db.execute("SELECT * FROM outbox WHERE id = %s", (row_id,))
    names = [column.name for column in cursor.description]
    found = cursor.fetchone()
    return dict(zip(names, found, strict=False)) if found else {}
