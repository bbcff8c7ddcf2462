"""Shared by the benches (retention, room_stats, lifecycle, ...): a throw-away
migrated database, and chat history generated set-based (generate_series)
so that a million messages take tens of seconds, not hours.

Generation runs with the messages' and reactions' triggers disabled (the
counters and mentions they keep row by row), then sets the counters from a
recount (every counter the triggers keep: `recount`; `counter_mismatches`
checks them all against one). room_stats' triggers (migration 0023) did not see
it either: a bench that reads room_stats calls rebuild_room_stats_rollup().
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
        # Reactions too: their per-row reaction_count trigger made most of
        # the generation time; recount() sets reaction_count.
        conn.execute("ALTER TABLE reactions DISABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO reactions (message_id, message_created_at, user_id, emoji, created_at)"
            " SELECT id, created_at, (id * 7) %% %s + 1, '+1', created_at FROM messages",
            (users,),
        )
        conn.execute("ALTER TABLE reactions ENABLE TRIGGER USER")
    recount(conn)
    conn.execute("VACUUM ANALYZE")


def recount(conn: psycopg.Connection) -> None:
    """Set every counter the triggers keep from a recount (generation runs
    with them disabled). Rows already right are left alone."""
    conn.execute(
        "UPDATE rooms r SET message_count = c.n, last_activity_at = c.last"
        " FROM (SELECT room_id, count(*) FILTER (WHERE NOT is_deleted) AS n,"
        "  max(created_at) AS last"
        "  FROM messages WHERE room_id IS NOT NULL GROUP BY room_id) c WHERE r.id = c.room_id"
    )
    conn.execute(
        "UPDATE rooms r SET member_count = c.n FROM (SELECT r.id, count(rm.user_id) AS n"
        " FROM rooms r LEFT JOIN room_members rm ON rm.room_id = r.id GROUP BY r.id) c"
        " WHERE r.id = c.id AND r.member_count <> c.n"
    )
    conn.execute(
        "UPDATE room_members rm SET message_count = c.n FROM (SELECT rm.room_id, rm.user_id,"
        "  count(m.id) FILTER (WHERE NOT m.is_deleted) AS n FROM room_members rm"
        "  LEFT JOIN messages m ON m.room_id = rm.room_id AND m.author_id = rm.user_id"
        "  GROUP BY rm.room_id, rm.user_id) c"
        " WHERE rm.room_id = c.room_id AND rm.user_id = c.user_id AND rm.message_count <> c.n"
    )
    conn.execute(
        f"UPDATE messages m SET reaction_count = COALESCE(c.n, 0) FROM messages p"
        f" LEFT JOIN ({REACTIONS}) c USING (id, created_at)"
        " WHERE m.id = p.id AND m.created_at = p.created_at"
        " AND m.reaction_count <> COALESCE(c.n, 0)"
    )
    conn.execute(
        f"UPDATE messages m SET thread_count = COALESCE(c.n, 0),"
        " is_thread_root = COALESCE(c.n, 0) > 0 FROM messages p"
        f" LEFT JOIN ({REPLIES}) c USING (id, created_at)"
        " WHERE m.id = p.id AND m.created_at = p.created_at"
        " AND (m.thread_count <> COALESCE(c.n, 0) OR m.is_thread_root <> (COALESCE(c.n, 0) > 0))"
    )


# Per message (id, created_at): its reactions, its live replies, its mention rows.
REACTIONS = (
    "SELECT message_id AS id, message_created_at AS created_at, count(*) AS n"
    " FROM reactions GROUP BY 1, 2"
)
REPLIES = (
    "SELECT parent_message_id AS id, parent_created_at AS created_at, count(*) AS n"
    " FROM messages WHERE parent_message_id IS NOT NULL AND NOT is_deleted GROUP BY 1, 2"
)
MENTION_ROWS = (
    "SELECT message_id AS id, message_created_at AS created_at, count(*) AS n"
    " FROM message_mentions GROUP BY 1, 2"
)

# Each counter the triggers keep: the rows where it differs from a recount.
MISMATCHES = {
    "room_messages": (
        "SELECT count(*) FROM rooms r LEFT JOIN LATERAL (SELECT count(*) AS n"
        " FROM messages m WHERE m.room_id = r.id AND NOT m.is_deleted) c ON true"
        " WHERE r.message_count <> c.n"
    ),
    "room_members": (
        "SELECT count(*) FROM rooms r LEFT JOIN LATERAL (SELECT count(*) AS n"
        " FROM room_members rm WHERE rm.room_id = r.id) c ON true WHERE r.member_count <> c.n"
    ),
    "member_messages": (
        "SELECT count(*) FROM (SELECT rm.message_count,"
        "  count(m.id) FILTER (WHERE NOT m.is_deleted) AS n FROM room_members rm"
        "  LEFT JOIN messages m ON m.room_id = rm.room_id AND m.author_id = rm.user_id"
        "  GROUP BY rm.room_id, rm.user_id, rm.message_count) c WHERE c.message_count <> c.n"
    ),
    "reaction_counts": (
        f"SELECT count(*) FROM messages m LEFT JOIN ({REACTIONS}) c USING (id, created_at)"
        " WHERE m.reaction_count <> COALESCE(c.n, 0)"
    ),
    "thread_counts": (
        f"SELECT count(*) FROM messages m LEFT JOIN ({REPLIES}) c USING (id, created_at)"
        " WHERE m.thread_count <> COALESCE(c.n, 0) OR m.is_thread_root <> (COALESCE(c.n, 0) > 0)"
    ),
    "mention_rows": (
        f"SELECT count(*) FROM messages m LEFT JOIN ({MENTION_ROWS}) c USING (id, created_at)"
        " WHERE cardinality(m.mentions) <> COALESCE(c.n, 0)"
    ),
}


def counter_mismatches(conn: psycopg.Connection) -> dict[str, int]:
    """Per counter, how many rows differ from a recount (all 0 when exact)."""
    return {name: conn.execute(query).fetchone()[0] for name, query in MISMATCHES.items()}


def counters_exact(conn: psycopg.Connection) -> bool:
    return not any(counter_mismatches(conn).values())
