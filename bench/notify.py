"""Notifications and enrichment, each beside a same-run baseline.

1. Fan-out: a post in a room of MEMBERS members who all asked for 'all'
   (an @everyone). Measured from the post's commit to the last notification
   row committed, running messages.index as a worker runs it (Celery's
   apply, in this process: the relay and broker hop before it is what
   bench/load.py measures). Beside it, the bare INSERT ... SELECT of the
   same rows in one statement (rolled back). Goal: <= 2 s.
2. Enrichment throughput, in messages per second of one process: the
   messages.index task (bookkeeping, enrichment written back, fan-out to a
   two-member room) and enrich_message alone (read, render, detect, write
   back), beside the bare render + detect loop (enrichment() on the same
   contents, no database). Goal: >= 0.8x the bare loop.

The last line is one JSON object.

Usage: VEZA_BENCH_ADMIN_URL=postgresql://root@127.0.0.1:5432/postgres \\
    python3 bench/notify.py [--members 10000] [--rounds 5] [--messages 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.maintenance_data import bench_database

# Chat as it comes: prose in a few languages, some markdown, a code block.
CONTENTS = [
    "Salut ! Voici le code que tu cherchais :\n```rust\nfn main() {}\n```",
    "The deploy went out this morning and **everything** looks fine so far.",
    "Kannst du dir bitte den neuen Entwurf ansehen, bevor wir ihn verschicken?",
    "¿Alguien sabe por qué falla la compilación en la rama principal?",
    "- first point\n- second point with `inline code`\n- see https://example.com/a",
    "ok",
]


def members_room(conn: psycopg.Connection, members: int) -> tuple[int, int]:
    """A public room with `members` members, every one at level 'all'
    (the seed's default); returns (room id, the author's id)."""
    conn.execute(
        "INSERT INTO users (username, email, password_hash)"
        " SELECT 'member' || n, 'member' || n || '@example.com', 'x'"
        " FROM generate_series(1, %s) n",
        (members,),
    )
    author = conn.execute("SELECT min(id) FROM users").fetchone()[0]
    room = conn.execute(
        "INSERT INTO rooms (name, owner_id, max_members) VALUES ('everyone', %s, 10000)"
        " RETURNING id",
        (author,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO room_members (room_id, user_id, joined_at)"
        " SELECT %s, id, now() - interval '1 day' FROM users ORDER BY id LIMIT %s",
        (room, members),
    )
    return room, author


def post(conn: psycopg.Connection, author: int, room: int, content: str) -> int:
    return conn.execute(
        "INSERT INTO messages (room_id, author_id, content, content_type)"
        " VALUES (%s, %s, %s, 'markdown') RETURNING id",
        (room, author, content),
    ).fetchone()[0]


def bare_fanout_seconds(conn: psycopg.Connection, room: int, author: int, message: int) -> float:
    """The same rows in one INSERT ... SELECT, rolled back."""
    with conn.transaction(force_rollback=True):
        started = time.perf_counter()
        conn.execute(
            "INSERT INTO notifications (user_id, kind, message_id, message_created_at, room_id)"
            " SELECT rm.user_id, 'message', m.id, m.created_at, m.room_id"
            " FROM room_members rm JOIN messages m ON m.id = %s"
            " WHERE rm.room_id = %s AND rm.user_id <> %s",
            (message, room, author),
        )
        return time.perf_counter() - started


def fanout(conn: psycopg.Connection, members: int, rounds: int) -> dict[str, float]:
    from worker import app

    app.loader.import_default_modules()
    index = app.tasks["messages.index"]
    room, author = members_room(conn, members)
    ours, bare = [], []
    for n in range(rounds):
        message = post(conn, author, room, f"@everyone round {n}: the release is out")
        bare.append(bare_fanout_seconds(conn, room, author, message))
        committed = time.perf_counter()  # autocommit: the INSERT has committed
        result = index.apply(args=[message])
        ours.append(time.perf_counter() - committed)
        assert result.successful(), result.result
        written = conn.execute(
            "SELECT count(*) FROM notifications WHERE message_id = %s", (message,)
        ).fetchone()[0]
        assert written == members - 1, written
        print(f"fan-out to {written} members: {ours[-1]:.3f} s (bare insert {bare[-1]:.3f} s)")
    return {
        "fanout_members": members,
        "fanout_p50_s": round(statistics.median(ours), 3),
        "fanout_max_s": round(max(ours), 3),
        "fanout_bare_p50_s": round(statistics.median(bare), 3),
        "fanout_ratio": round(statistics.median(ours) / statistics.median(bare), 2),
    }


def throughput(conn: psycopg.Connection, messages: int) -> dict[str, float]:
    from db.engine import session_scope
    from veza.messages.enrichment import enrich_messages, enrichment
    from worker import app

    index = app.tasks["messages.index"]
    author, friend = (
        conn.execute(
            "INSERT INTO users (username, email, password_hash) VALUES (%s, %s, 'x') RETURNING id",
            (name, f"{name}@example.com"),
        ).fetchone()[0]
        for name in ("writer", "reader")
    )
    room = conn.execute(
        "INSERT INTO rooms (name, owner_id) VALUES ('pair', %s) RETURNING id", (author,)
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO room_members (room_id, user_id) VALUES (%s, %s), (%s, %s)",
        (room, author, room, friend),
    )
    contents = [CONTENTS[n % len(CONTENTS)] + f" #{n}" for n in range(messages)]
    ids = [post(conn, author, room, content) for content in contents]

    def rate(work) -> float:
        started = time.perf_counter()
        for item in work:
            item()
        return messages / (time.perf_counter() - started)

    bare = rate(lambda c=c: enrichment(c, "markdown") for c in contents)

    def enrich_only(message_id: int) -> None:
        with session_scope() as session:
            enrich_messages(session, [message_id])

    enriched = rate(lambda i=i: enrich_only(i) for i in ids)
    task = rate(lambda i=i: index.apply(args=[i]) for i in ids)
    print(
        f"enrichment: bare {bare:.0f}/s, enrich_message {enriched:.0f}/s"
        f" ({enriched / bare:.2f}x), messages.index {task:.0f}/s ({task / bare:.2f}x)"
    )
    return {
        "enrich_messages": messages,
        "enrich_bare_per_s": round(bare),
        "enrich_message_per_s": round(enriched),
        "enrich_message_ratio": round(enriched / bare, 2),
        "index_task_per_s": round(task),
        "index_task_ratio": round(task / bare, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    with bench_database("veza_bench_notify") as url:
        from db.engine import libpq_url

        conn = psycopg.connect(libpq_url(url, kind="maintenance"), autocommit=True)
        figures = fanout(conn, args.members, args.rounds) | throughput(conn, args.messages)
        conn.close()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
