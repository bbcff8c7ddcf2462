"""room_stats: the rollup refresh against the seed's full refresh.

Data (bench/maintenance_data.py): MESSAGES messages with one reaction each
over ROOMS rooms and the last DAYS days. Each round inserts 1,000 new
messages (through the triggers, as chat does), then times
`refresh_room_stats_rollup()` (what maintenance.refresh_room_stats runs)
and `REFRESH MATERIALIZED VIEW CONCURRENTLY` of the seed's room_stats
(made here as `seed_room_stats` from the seed's own SQL: room_stats itself
is a view over the rollup since migration 0012). Goal: >= 10x
faster. Then both are computed in one transaction (one NOW()) and compared
row for row: they must be identical.

Usage: python3 bench/room_stats.py [--messages 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
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


def seconds(conn: psycopg.Connection, statement: str) -> float:
    started = time.perf_counter()
    conn.execute(statement)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with bench_database("veza_bench_room_stats") as url:
        from db.engine import libpq_url

        conn = psycopg.connect(
            libpq_url(url, kind="maintenance"), autocommit=True
        )  # long statements
        generate(conn, args.messages, args.rooms, args.days)
        conn.execute(SEED_VIEW)
        conn.execute("CREATE UNIQUE INDEX ON seed_room_stats(room_id)")
        conn.execute("SELECT refresh_room_stats_rollup()")
        rollup_s, full_s = [], []
        for _ in range(args.rounds):
            conn.execute(
                "INSERT INTO messages (room_id, author_id, content)"
                " SELECT g %% %s + 1, g %% 100 + 1, 'new ' || g FROM generate_series(1, 1000) g",
                (args.rooms,),
            )
            rollup_s.append(seconds(conn, "SELECT refresh_room_stats_rollup()"))
            full_s.append(seconds(conn, "REFRESH MATERIALIZED VIEW CONCURRENTLY seed_room_stats"))
        with conn.transaction():
            conn.execute("SELECT refresh_room_stats_rollup()")
            conn.execute("REFRESH MATERIALIZED VIEW seed_room_stats")
            differing = conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM ((SELECT {c} FROM room_stats"
                    " EXCEPT SELECT {c} FROM seed_room_stats) UNION ALL"
                    " (SELECT {c} FROM seed_room_stats EXCEPT SELECT {c} FROM room_stats)) d"
                ).format(c=COLUMNS)
            ).fetchone()[0]
            rooms = conn.execute("SELECT count(*) FROM room_stats").fetchone()[0]
        total = conn.execute("SELECT count(*) FROM messages").fetchone()[0]

    best_rollup, best_full = min(rollup_s), min(full_s)
    figures = {
        "messages": total,
        "rooms": rooms,
        "rounds": args.rounds,
        "rollup_refresh_s": round(best_rollup, 4),
        "full_refresh_concurrently_s": round(best_full, 4),
        "speedup": round(best_full / best_rollup, 1),
        "identical": differing == 0,
        "differing_rows": differing,
    }
    print(
        f"refresh after 1,000 new messages: rollup {best_rollup:.4f} s vs REFRESH MATERIALIZED"
        f" VIEW CONCURRENTLY {best_full:.4f} s -> {figures['speedup']}x faster (goal >= 10x);"
        f" identical numbers: {differing == 0} ({rooms} rooms)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
