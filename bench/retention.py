"""Retention purge against plain set-based SQL, in the same run.

Data (bench/maintenance_data.py): MESSAGES messages with one reaction each
over ROOMS rooms and the last DAYS days, plus OLD_MONTH_MESSAGES in a month
eight months back, in rooms with a retention only. RETENTION_ROOMS rooms get
a 30-day retention; the others keep everything, so the recent months cannot
be dropped whole and go row by row.

Every room's authors are its members (room_members, with their
message_count), so the purge pays for the member counters it keeps too; the
concurrent writer posts as a user of its own, a member of no room.

Figures (issue 17's goals):
- purge rows/s (archive + delete, keyset batches per room, ~100 ms each)
  beside two baselines over the same rows, each run in a transaction rolled
  back before the purge: the storage engine's own speed, a DELETE with no
  trigger at all (`session_replication_role = replica`: no counter triggers,
  no foreign-key cascades, no archive), goal >= 0.3x; and one set-based
  DELETE with every trigger, goal >= 5x.
- p99 latency of single-message inserts from a concurrent writer during the
  purge, beside the same writer's p99 before the purge. Goal <= 50 ms.
- dropping the old month's partition (archive, unlink, detach, drop), goal
  <= 3 s for 100,000 rows, beside the trigger-free DELETE of its rows.
- counters equal a recount after everything.

Usage: python3 bench/retention.py [--messages 900000] [--old-month-messages 100000]
  [--rooms 1000] [--retention-rooms 300] [--days 120]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.maintenance_data import bench_database, counter_mismatches, generate, recount


def old_month_start(conn: psycopg.Connection) -> str:
    return conn.execute(
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '8 months')::date"
    ).fetchone()[0]


def add_old_month(conn: psycopg.Connection, count: int, first_room: int, rooms: int) -> None:
    month = old_month_start(conn)
    conn.execute("SELECT create_monthly_partitions('messages', %s, 1)", (month,))
    with conn.transaction():
        conn.execute("ALTER TABLE messages DISABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at)"
            " SELECT %s + g %% %s, g %% 100 + 1, 'old ' || g,"
            "  %s::timestamptz + (g::float / %s) * interval '27 days'"
            " FROM generate_series(1, %s) g",
            (first_room, rooms, month, count, count),
        )
        conn.execute(
            "INSERT INTO reactions (message_id, message_created_at, user_id, emoji, created_at)"
            " SELECT id, created_at, (id * 7) % 100 + 1, '+1', created_at FROM messages"
            " WHERE content LIKE 'old %'"
        )
        conn.execute("ALTER TABLE messages ENABLE TRIGGER USER")


def timed(
    conn: psycopg.Connection, sql: str, params=(), trigger_free: bool = False
) -> tuple[float, int]:
    """Run `sql` in a transaction that is rolled back: its time and rowcount.
    `trigger_free`: with no trigger firing, foreign keys' included (the
    storage engine's own speed)."""
    with conn.transaction(force_rollback=True):
        if trigger_free:
            conn.execute("SET LOCAL session_replication_role = replica")
        started = time.perf_counter()
        rows = conn.execute(sql, params).rowcount
        return time.perf_counter() - started, rows


def add_members(conn: psycopg.Connection) -> int:
    """Every author a member of the rooms they posted in (recount() then
    sets their message_count), and a user of its own for the writer."""
    conn.execute(
        "INSERT INTO room_members (room_id, user_id)"
        " SELECT DISTINCT room_id, author_id FROM messages WHERE room_id IS NOT NULL"
    )
    return conn.execute(
        "INSERT INTO users (username, email, password_hash)"
        " VALUES ('writer', 'writer@example.com', 'x') RETURNING id"
    ).fetchone()[0]


# The rows the purge's room batches delete (all but the old month, which
# goes whole), as the baselines delete them.
PURGED_ROWS = (
    "DELETE FROM messages m USING rooms r WHERE m.room_id = r.id"
    " AND r.message_retention_days > 0"
    " AND m.created_at < now() - make_interval(days => r.message_retention_days)"
    " AND m.created_at >= %s::date + interval '1 month'"
)
MONTH_ROWS = (
    "DELETE FROM messages"
    " WHERE created_at >= %s::date AND created_at < %s::date + interval '1 month'"
)


class Writer(threading.Thread):
    """Chat traffic: one message at a time into a random room."""

    def __init__(self, url: str, rooms: int, author: int) -> None:
        super().__init__(daemon=True)
        self.url, self.rooms, self.author = url, rooms, author
        self.latencies: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopping.is_set():
                started = time.perf_counter()
                conn.execute(
                    "INSERT INTO messages (room_id, author_id, content) VALUES (%s, %s, 'hi')",
                    (random.randint(1, self.rooms), self.author),
                )
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.005)

    def p99_ms(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] * 1000

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def measure_writer(url: str, rooms: int, author: int, action) -> tuple[float, float, int]:
    writer = Writer(url, rooms, author)
    writer.start()
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    writer.stop()
    return elapsed, writer.p99_ms(), len(writer.latencies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=900_000)
    parser.add_argument("--old-month-messages", type=int, default=100_000)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--retention-rooms", type=int, default=300)
    parser.add_argument("--days", type=int, default=120)
    args = parser.parse_args()
    first_retention_room = args.rooms - args.retention_rooms + 1

    with bench_database("veza_bench_retention") as url:
        from db.engine import libpq_url, set_kind
        from veza.maintenance.run import Run
        from veza.messages import retention
        from worker import app

        app.loader.import_default_modules()
        set_kind("maintenance")  # runs the purge in this process, as a maintenance task would
        url = libpq_url(url)
        conn = psycopg.connect(url, autocommit=True)
        started = time.perf_counter()
        generate(conn, args.messages, args.rooms, args.days)
        add_old_month(conn, args.old_month_messages, first_retention_room, args.retention_rooms)
        writer = add_members(conn)
        conn.execute(
            "UPDATE rooms SET message_retention_days = 30 WHERE id >= %s", (first_retention_room,)
        )
        recount(conn)
        conn.execute("VACUUM ANALYZE")
        generated_s = time.perf_counter() - started
        total = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        month = old_month_start(conn)

        delete_rows_s, delete_rows = timed(conn, PURGED_ROWS, (month,))
        bare_rows_s, bare_rows = timed(conn, PURGED_ROWS, (month,), trigger_free=True)
        bare_month_s, bare_month_rows = timed(conn, MONTH_ROWS, (month, month), trigger_free=True)
        conn.execute("VACUUM ANALYZE")

        run = Run("bench", 0, False)
        _, baseline_p99, _ = measure_writer(url, args.rooms, writer, lambda: time.sleep(5))
        drop_s, _, _ = measure_writer(
            url, args.rooms, writer, lambda: retention.drop_covered_message_partitions(run)
        )
        dropped_rows = run.counts["messages_deleted"]

        def purge_rooms() -> None:
            for room_id, cutoff in retention.rooms_with_retention():
                retention.purge_room(run, room_id, cutoff)

        purge_s, purge_p99, inserts = measure_writer(url, args.rooms, writer, purge_rooms)
        purged_rows = run.counts["messages_deleted"] - dropped_rows
        mismatches = counter_mismatches(conn)

    purge_rate = purged_rows / purge_s
    figures = {
        "messages": total,
        "rooms": args.rooms,
        "generate_s": round(generated_s, 1),
        "purge_rows": purged_rows,
        "purge_rows_s": round(purge_rate),
        "bare_delete_rows": bare_rows,
        "bare_delete_rows_s": round(bare_rows / bare_rows_s),
        "purge_vs_bare": round(purge_rate / (bare_rows / bare_rows_s), 3),
        "set_delete_rows": delete_rows,
        "set_delete_rows_s": round(delete_rows / delete_rows_s),
        "purge_vs_set_delete": round(purge_rate / (delete_rows / delete_rows_s), 2),
        "insert_p99_ms_during_purge": round(purge_p99, 2),
        "insert_p99_ms_baseline": round(baseline_p99, 2),
        "inserts_during_purge": inserts,
        "partition_rows": dropped_rows,
        "partition_drop_s": round(drop_s, 3),
        "partition_bare_delete_rows": bare_month_rows,
        "partition_bare_delete_s": round(bare_month_s, 3),
        "counter_mismatches": mismatches,
        "counters_exact": not any(mismatches.values()),
    }
    print(
        f"purge:      {figures['purge_rows_s']} rows/s vs trigger-free DELETE "
        f"{figures['bare_delete_rows_s']} rows/s -> {figures['purge_vs_bare']}x (goal >= 0.3x)"
    )
    print(
        f"            vs set-based DELETE with triggers {figures['set_delete_rows_s']} rows/s"
        f" -> {figures['purge_vs_set_delete']}x (goal >= 5x)"
    )
    print(
        f"insert p99: {figures['insert_p99_ms_during_purge']} ms during purge vs "
        f"{figures['insert_p99_ms_baseline']} ms before -> "
        f"{purge_p99 / baseline_p99:.2f}x (goal <= 50 ms)"
    )
    print(
        f"partition:  drop of {dropped_rows} rows {figures['partition_drop_s']} s (goal <= 3 s"
        f" for 100,000) vs trigger-free DELETE of its rows {figures['partition_bare_delete_s']} s"
        " (the drop also archives every row and reaction)"
    )
    print(f"counters:   {mismatches} -> exact: {figures['counters_exact']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
