"""Shared by bench/retention.py and bench/room_stats.py: a throw-away
migrated database, and chat history generated set-based (generate_series)
so that a million messages take tens of seconds, not hours.

Generation runs with the messages triggers disabled (the counters and
mentions they keep row by row), then sets the counters from a recount.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("VEZA_BENCH_ADMIN_URL", "postgresql://veza:veza@127.0.0.1:5432/postgres")


@contextmanager
def bench_database(name: str) -> Iterator[str]:
    """A fresh migrated database; DATABASE_URL points at it meanwhile."""
    from veza.settings import reload_settings

    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    os.environ["DATABASE_URL"] = url
    reload_settings()
    try:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        from db.engine import get_engine

        get_engine().dispose()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(drop)


def generate(
    conn: psycopg.Connection, messages: int, rooms: int, days: int, users: int = 100
) -> None:
    """`rooms` rooms, `messages` messages spread evenly over the rooms and
    the last `days` days, one reaction each (made when the message was)."""
    conn.execute(
        "SELECT create_monthly_partitions('messages',"
        " (now() - make_interval(days => %s))::date, %s)",
        (days + 31, days // 28 + 3),
    )
    conn.execute(
        "INSERT INTO users (username, email, password_hash)"
        " SELECT 'user' || g, 'user' || g || '@example.com', 'x' FROM generate_series(1, %s) g",
        (users,),
    )
    conn.execute(
        "INSERT INTO rooms (name, owner_id) SELECT 'room' || g, 1 FROM generate_series(1, %s) g",
        (rooms,),
    )
    with conn.transaction():
        conn.execute("ALTER TABLE messages DISABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at)"
            " SELECT g %% %s + 1, g %% %s + 1, 'message ' || g,"
            "  now() - (g::float / %s) * make_interval(days => %s)"
            " FROM generate_series(1, %s) g",
            (rooms, users, messages, days, messages),
        )
        conn.execute("ALTER TABLE messages ENABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO reactions (message_id, message_created_at, user_id, emoji, created_at)"
            " SELECT id, created_at, (id * 7) %% %s + 1, '+1', created_at FROM messages",
            (users,),
        )
    recount(conn)
    conn.execute("VACUUM ANALYZE")


def recount(conn: psycopg.Connection) -> None:
    conn.execute(
        "UPDATE rooms r SET message_count = c.n, last_activity_at = c.last"
        " FROM (SELECT room_id, count(*) FILTER (WHERE NOT is_deleted) AS n,"
        "  max(created_at) AS last"
        "  FROM messages WHERE room_id IS NOT NULL GROUP BY room_id) c WHERE r.id = c.room_id"
    )


def counters_exact(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM rooms r LEFT JOIN LATERAL (SELECT count(*) AS n"
        " FROM messages m WHERE m.room_id = r.id AND NOT m.is_deleted) c ON true"
        " WHERE r.message_count <> c.n)"
    ).fetchone()[0]
