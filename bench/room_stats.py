"""room_stats: a refresh that follows the change, against the seed's full
refresh, at several table sizes (issue 17).

Per size (bench/maintenance_data.py, a fresh database each): MESSAGES
messages with one reaction each over ROOMS rooms and the last DAYS days,
so the week's traffic grows with the size. Then:
- the cost of one chat post's single-row INSERT statement, with the
  room_stats trigger (migration 0023) and without it (disabled in the same
  run), alternating blocks;
- ROUNDS rounds of 1,000 changes through the triggers, as chat makes them
  (700 new messages, 150 reactions added, 100 messages soft-deleted, 50
  reactions removed, over random rooms), each followed by a timed
  `refresh_room_stats_rollup()` (what maintenance.refresh_room_stats runs)
  and a timed `REFRESH MATERIALIZED VIEW CONCURRENTLY` of the seed's
  room_stats (made here as `seed_room_stats` from the seed's own SQL:
  room_stats itself is a view over the rollup since migration 0012);
- both computed in one transaction (one NOW()) and compared row for row.

Goals: the refresh within 1.5x across sizes, >= 50x faster than the full
refresh at 1M, identical numbers. Ends with one JSON line.

Usage: python3 bench/room_stats.py [--messages 250000 1000000 2000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.maintenance_data import bench_database, generate
from db.migrations.sqlfile import seed_section

# The seed's materialized view, under a name of its own, with the unique
# index REFRESH ... CONCURRENTLY needs.
SEED_VIEW = seed_section("CREATE MATERIALIZED VIEW room_stats AS", "r.member_count;").replace(
    "VIEW room_stats AS", "VIEW seed_room_stats AS", 1
)

COLUMNS = sql.SQL(", ").join(
    map(
        sql.Identifier,
        (
            "room_id",
            "name",
            "member_count",
            "total_messages",
            "messages_24h",
            "messages_7d",
            "active_users_24h",
            "last_message_at",
            "reactions_24h",
        ),
    )
)

# The trigger a chat post fires for room_stats (migration 0023).
POST_TRIGGER = "trigger_room_stats_messages_inserted"

# 1,000 changes, as chat makes them, over random rooms; %(rooms)s rooms,
# users 1..100 (bench/maintenance_data.py).
CHANGES = (
    (
        "INSERT INTO messages (room_id, author_id, content)"
        " SELECT (random() * (%(rooms)s - 1))::int + 1, (random() * 99)::int + 1, 'new'"
        " FROM generate_series(1, 700)"
    ),
    (
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji)"
        " SELECT id, created_at, (random() * 99)::int + 1, 'new' FROM messages"
        " WHERE created_at > now() - interval '2 days' ORDER BY random() LIMIT 150"
        " ON CONFLICT DO NOTHING"
    ),
    (
        "UPDATE messages SET is_deleted = true, deleted_at = now() WHERE (id, created_at) IN"
        " (SELECT id, created_at FROM messages WHERE NOT is_deleted"
        "  AND created_at > now() - interval '3 days' ORDER BY random() LIMIT 100)"
    ),
    (
        "DELETE FROM reactions WHERE id IN"
        " (SELECT id FROM reactions WHERE created_at > now() - interval '2 days'"
        "  ORDER BY random() LIMIT 50)"
    ),
)


def value(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query}")
    return int(row[0])


def seconds(conn: psycopg.Connection, statement: str) -> float:
    started = time.perf_counter()
    conn.execute(statement)
    return time.perf_counter() - started


def post_cost_ms(conn: psycopg.Connection, blocks: int = 6, posts: int = 300) -> dict[str, float]:
    """Median ms of one chat post's INSERT statement (triggers included),
    with and without the room_stats trigger, in alternating blocks. Each
    block runs in a transaction rolled back: the commit's WAL flush, the
    same either way, would hide the difference."""
    timings: dict[bool, list[float]] = {True: [], False: []}
    post = "INSERT INTO messages (room_id, author_id, content) VALUES (1, 1, 'post')"
    for block in range(blocks):
        with_trigger = block % 2 == 0
        action = "ENABLE" if with_trigger else "DISABLE"
        conn.execute(
            sql.SQL("ALTER TABLE messages {} TRIGGER {}").format(
                sql.SQL(action), sql.Identifier(POST_TRIGGER)
            )
        )
        conn.execute("BEGIN")
        timings[with_trigger] += [seconds(conn, post) * 1000 for _ in range(posts)]
        conn.execute("ROLLBACK")
    conn.execute(
        sql.SQL("ALTER TABLE messages ENABLE TRIGGER {}").format(sql.Identifier(POST_TRIGGER))
    )
    return {
        "with_ms": round(statistics.median(timings[True]), 4),
        "without_ms": round(statistics.median(timings[False]), 4),
    }


def differing_rows(conn: psycopg.Connection) -> tuple[int, int]:
    """Rollup and seed view computed in one transaction (one NOW()): rows
    in one and not the other, both ways; and the number of rooms."""
    with conn.transaction():
        conn.execute("SELECT refresh_room_stats_rollup()")
        conn.execute("REFRESH MATERIALIZED VIEW seed_room_stats")
        differing = value(
            conn,
            sql.SQL(
                "SELECT count(*) FROM ((SELECT {c} FROM room_stats"
                " EXCEPT SELECT {c} FROM seed_room_stats) UNION ALL"
                " (SELECT {c} FROM seed_room_stats EXCEPT SELECT {c} FROM room_stats)) d"
            )
            .format(c=COLUMNS)
            .as_string(conn),
        )
        return differing, value(conn, "SELECT count(*) FROM room_stats")


def one_size(messages: int, rooms: int, days: int, rounds: int) -> dict[str, object]:
    with bench_database("veza_bench_room_stats") as url:
        from db.engine import libpq_url

        # autocommit: each change and each refresh its own transaction, as in production
        conn = psycopg.connect(libpq_url(url, kind="maintenance"), autocommit=True)
        started = time.perf_counter()
        generate(conn, messages, rooms, days)
        generated_s = time.perf_counter() - started
        conn.execute(SEED_VIEW)
        conn.execute("CREATE UNIQUE INDEX ON seed_room_stats(room_id)")
        post = post_cost_ms(conn)
        # Generation (and the posts without the trigger) went behind the
        # triggers' back: start from a rebuild, as after any bulk load.
        conn.execute("SELECT rebuild_room_stats_rollup()")
        conn.execute("VACUUM ANALYZE room_stats_deltas, room_stats_windows, room_stats_rollup")
        refresh_s, full_s, written = [], [], []
        for _ in range(rounds):
            for change in CHANGES:
                conn.execute(change, {"rooms": rooms})
            started = time.perf_counter()
            written.append(value(conn, "SELECT refresh_room_stats_rollup()"))
            refresh_s.append(time.perf_counter() - started)
            full_s.append(seconds(conn, "REFRESH MATERIALIZED VIEW CONCURRENTLY seed_room_stats"))
        differing, room_count = differing_rows(conn)
        total = value(conn, "SELECT count(*) FROM messages")
        week = value(
            conn, "SELECT count(*) FROM messages WHERE created_at >= now() - interval '7 days'"
        )
        conn.close()
    refresh, full = statistics.median(refresh_s), statistics.median(full_s)
    return {
        "messages": total,
        "messages_7d": week,
        "rooms": room_count,
        "generate_s": round(generated_s, 1),
        "refresh_s": round(refresh, 4),
        "refresh_best_s": round(min(refresh_s), 4),
        "rooms_written": statistics.median(written),
        "full_refresh_concurrently_s": round(full, 4),
        "speedup": round(full / refresh, 1),
        "post_with_trigger_ms": post["with_ms"],
        "post_without_trigger_ms": post["without_ms"],
        "identical": differing == 0,
        "differing_rows": differing,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, nargs="+", default=[250_000, 1_000_000, 2_000_000])
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    sizes = []
    for messages in args.messages:
        figures = one_size(messages, args.rooms, args.days, args.rounds)
        sizes.append(figures)
        print(
            f"{figures['messages']:>9,} messages ({figures['messages_7d']:,} in the last 7 days):"
            f" refresh after 1,000 changes {figures['refresh_s']:.4f} s (median of"
            f" {args.rounds}, {figures['rooms_written']} rooms written) vs REFRESH MATERIALIZED"
            f" VIEW CONCURRENTLY {figures['full_refresh_concurrently_s']:.4f} s ->"
            f" {figures['speedup']}x faster; identical numbers: {figures['identical']};"
            f" one chat post {figures['post_with_trigger_ms']:.3f} ms with the room_stats"
            f" trigger vs {figures['post_without_trigger_ms']:.3f} ms without",
            flush=True,
        )
    refreshes = [float(str(size["refresh_s"])) for size in sizes]
    spread = max(refreshes) / min(refreshes)
    print(
        f"refresh across sizes: largest/smallest {spread:.2f}x (goal <= 1.5x);"
        " speedup vs full refresh at each size: "
        + ", ".join(f"{size['messages']:,}: {size['speedup']}x" for size in sizes)
        + " (goal >= 50x at 1M)"
    )
    print(json.dumps({"sizes": sizes, "refresh_spread": round(spread, 2), "rounds": args.rounds}))


if __name__ == "__main__":
    main()
