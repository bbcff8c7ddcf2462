"""An account's end: erasure and data export of a user with a long history,
each beside a same-run baseline (issue 15).

Data (set-based, generate_series): a user with MESSAGES messages over ROOMS
rooms (a tenth of them replies to other people's messages), a member of
every room; OTHERS other users writing TRAFFIC messages (default: as many),
MESSAGES / 10 of them mentioning the user; the user reacting to MESSAGES / 5
of theirs, and they to every fifth of the user's (so the user's share
stays the same whatever the traffic); FILES clean uploads of the user's,
FILE_MIB each (random bytes, in a local store in a temp dir). Bulk rows go
in with the triggers disabled, then every counter they keep is set from a
recount (bench/maintenance_data.py); the triggers are on for everything
measured.

Figures:
- export: the accounts.export task (build_export) in a fresh subprocess,
  run before the erasure so that it sees the messages: rows written, zip
  size, seconds, and the growth of the process's peak RSS (ru_maxrss)
  over the export, after a warm-up export of an empty account in the same
  process. Goal: growth < 32 MiB, whatever the size.
- erasure: maintenance.erase_deleted_accounts as a worker runs it (the
  Celery task's apply, in this process: lock, run log, phases, batches),
  on the user marked deleted past the grace; its messages erased per
  second of the whole run (every step, not only the messages'), beside a
  bare batched UPDATE of the same rows (`is_deleted = true, content =
  '[deleted]'`: the next 1,000 keys by keyset on the author index, then an
  UPDATE of them by primary key; each batch its own transaction, rolled
  back, so the erasure then sees the same rows). Goal >= 0.5x. The same
  bare UPDATE with the table's triggers disabled is shown beside it: what
  the counters the triggers keep cost. Each batched step of the erasure is
  timed too (apply_in_batches wrapped, by count key; nothing else changes).
- counters exact afterwards: every counter the triggers keep, beside a
  recount (bench/maintenance_data.counter_mismatches).

The last line is one JSON object.

Usage: VEZA_BENCH_ADMIN_URL=postgresql://root@127.0.0.1:5432/postgres \\
    python3 bench/lifecycle.py [--messages 100000] [--rooms 50] [--traffic N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.maintenance_data import bench_database, counter_mismatches, recount

BARE_BATCH = 1000


def generate(
    conn: psycopg.Connection, messages: int, rooms: int, others: int, days: int, traffic: int
) -> tuple[int, int]:
    """The data above; returns (the user's id, an empty account's id)."""
    conn.execute(
        "SELECT create_monthly_partitions('messages',"
        " (now() - make_interval(days => %s))::date, %s)",
        (days + 31, days // 28 + 3),
    )
    user = conn.execute(
        "INSERT INTO users (username, email, password_hash)"
        " VALUES ('leaving', 'leaving@example.com', 'x') RETURNING id"
    ).fetchone()[0]
    empty = conn.execute(
        "INSERT INTO users (username, email, password_hash)"
        " VALUES ('quiet', 'quiet@example.com', 'x') RETURNING id"
    ).fetchone()[0]
    first_other = conn.execute(
        "INSERT INTO users (username, email, password_hash)"
        " SELECT 'user' || g, 'user' || g || '@example.com', 'x' FROM generate_series(1, %s) g"
        " RETURNING id",
        (others,),
    ).fetchall()[0][0]
    conn.execute(
        "INSERT INTO rooms (name, owner_id) SELECT 'room' || g, %s FROM generate_series(1, %s) g",
        (first_other, rooms),
    )
    every = {"user": user, "first": first_other, "others": others, "days": days}
    with conn.transaction():
        for table in ("messages", "reactions", "room_members"):
            conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO room_members (room_id, user_id) SELECT r.id, u.id FROM rooms r, users u"
            " WHERE u.id = %(user)s OR u.id >= %(first)s",
            every,
        )
        # Other people's traffic; MESSAGES / 10 of it mentions the user.
        conn.execute(
            "INSERT INTO messages (room_id, author_id, content, mentions, created_at)"
            " SELECT r.id, %(first)s + g %% %(others)s, 'chat ' || g,"
            "  CASE WHEN g %% 10 = 0 AND g <= %(own)s THEN ARRAY[%(user)s::integer]"
            "  ELSE '{}' END,"
            "  now() - (g::float / %(n)s) * make_interval(days => %(days)s)"
            " FROM generate_series(1, %(n)s) g"
            " JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM rooms) r"
            "  ON r.k = g %% %(rooms)s",
            every | {"rooms": rooms, "n": traffic, "own": messages},
        )
        conn.execute(
            "INSERT INTO message_mentions (message_id, message_created_at, user_id)"
            " SELECT id, created_at, %(user)s FROM messages"
            " WHERE mentions @> ARRAY[%(user)s::integer]",
            every,
        )
        # The user's: nine in ten new, one in ten a reply to someone's message.
        replies = messages // 10
        conn.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at)"
            " SELECT r.id, %(user)s, 'my message ' || g || ' with some words in it',"
            "  now() - (g::float / %(n)s) * make_interval(days => %(days)s)"
            " FROM generate_series(1, %(own)s) g"
            " JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM rooms) r"
            "  ON r.k = g %% %(rooms)s",
            every | {"rooms": rooms, "own": messages - replies, "n": messages},
        )
        conn.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at,"
            "  parent_message_id, parent_created_at)"
            " SELECT room_id, %(user)s, 'my reply to ' || id, created_at + interval '1 second',"
            "  id, created_at FROM messages WHERE author_id <> %(user)s AND id %% 10 = 5"
            " ORDER BY id LIMIT %(replies)s",
            every | {"replies": replies},
        )
        conn.execute(
            "INSERT INTO reactions (message_id, message_created_at, user_id, emoji)"
            " SELECT id, created_at, CASE WHEN author_id = %(user)s"
            "  THEN %(first)s + id %% %(others)s ELSE %(user)s END, '+1'"
            " FROM messages WHERE id %% 5 = 0 AND (author_id = %(user)s OR id <= %(own)s)",
            every | {"own": messages},
        )
        for table in ("messages", "reactions", "room_members"):
            conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    recount(conn)
    conn.execute("VACUUM ANALYZE")
    return user, empty


def add_files(conn: psycopg.Connection, user: int, count: int, mib: int) -> None:
    """`count` clean uploads of the user's, stored as the pipeline stores them."""
    from veza.storage import get_storage

    storage = get_storage()
    room = conn.execute("SELECT min(id) FROM rooms").fetchone()[0]
    for n in range(count):
        digest = f"{n:064x}"
        relative = storage.blob_path(digest)
        with storage.atomic_writer(relative) as out:
            for _ in range(mib):
                out.write(os.urandom(1 << 20))
        conn.execute(
            "INSERT INTO files (filename, original_filename, file_path, file_size, uploaded_by,"
            " room_id, file_hash, processing_status, virus_scan_status, mime_type)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 'completed', 'clean',"
            " 'application/octet-stream')",
            (f"f{n}.bin", f"upload {n}.bin", relative, mib << 20, user, room, digest),
        )


def bare_update(conn: psycopg.Connection, user: int, triggers: bool = True) -> tuple[int, float]:
    """The user's messages tombstoned by a bare batched UPDATE: the next 1,000
    keys by keyset in the author index's order (created_at, then id), then an
    UPDATE of those rows by primary key, each batch its own transaction,
    rolled back. Without `triggers`, the same with the table's triggers
    disabled in that transaction (what the counters cost)."""
    rows, last, started = 0, None, time.perf_counter()
    after = " AND created_at <= %(at)s AND (created_at, id) < (%(at)s, %(id)s)"
    while True:
        keys = conn.execute(
            "SELECT created_at, id FROM messages WHERE author_id = %(user)s"
            + (after if last else "")
            + " ORDER BY created_at DESC, id DESC LIMIT %(size)s",
            {"user": user, "size": BARE_BATCH, **(last or {})},
        ).fetchall()
        if not keys:
            return rows, time.perf_counter() - started
        with conn.transaction(force_rollback=True):
            if not triggers:
                conn.execute("ALTER TABLE messages DISABLE TRIGGER USER")
            rows += conn.execute(
                "UPDATE messages SET is_deleted = true, content = '[deleted]'"
                " WHERE id = ANY(%(ids)s) AND created_at BETWEEN %(first)s AND %(last)s",
                {"ids": [key[1] for key in keys], "first": keys[-1][0], "last": keys[0][0]},
            ).rowcount
        last = dict(zip(("at", "id"), keys[-1], strict=True))


def export_in_subprocess(conn: psycopg.Connection, user: int, empty: int) -> dict[str, float]:
    """Run the export of `user` in a fresh process (after a warm-up export of
    `empty`), then read the zip back for its rows."""
    from veza.storage import get_storage

    ids = [
        conn.execute(
            "INSERT INTO data_exports (user_id) VALUES (%s) RETURNING id", (who,)
        ).fetchone()[0]
        for who in (empty, user)
    ]
    child = subprocess.run(
        [sys.executable, __file__, "--export-child", *map(str, ids)],
        check=True,
        capture_output=True,
        text=True,
    )
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    path, size = conn.execute(
        "SELECT storage_path, size_bytes FROM data_exports WHERE id = %s AND status = 'done'",
        (ids[1],),
    ).fetchone()
    stored = get_storage().open(path)
    with stored.stream as stream:
        archive = zipfile.ZipFile(io.BytesIO(stream.read()))
    rows = {
        name: archive.read(name).count(b"\n")
        for name in archive.namelist()
        if name.endswith(".jsonl")
    }
    return measured | {
        "export_rows": sum(rows.values()) + 1,  # profile.json
        "export_messages": rows["messages.jsonl"],
        "export_mib": round(size / (1 << 20), 1),
    }


def export_child(warm_up: int, export_id: int) -> None:
    """In the subprocess: the export task as a worker runs it, peak RSS around it."""
    from worker import app

    app.loader.import_default_modules()
    task = app.tasks["accounts.export"]
    assert task.apply(args=[warm_up]).successful()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    result = task.apply(args=[export_id])
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.successful(), result.result
    assert result.result, "the export found nothing to build"
    print(
        json.dumps(
            {
                "export_s": round(elapsed, 2),
                "export_peak_rss_before_mib": round(before / 1024, 1),
                "export_peak_rss_mib": round(after / 1024, 1),
                "export_rss_growth_mib": round((after - before) / 1024, 1),
            }
        )
    )


def erase(conn: psycopg.Connection, user: int) -> tuple[dict[str, int], float, dict[str, float]]:
    """maintenance.erase_deleted_accounts as a worker runs it, on the user
    marked deleted a day past the grace; also the seconds each of its
    batched steps took (apply_in_batches timed by count key, unchanged)."""
    from veza.accounts import erasure
    from veza.settings import get_settings
    from worker import app

    conn.execute(
        "UPDATE users SET deleted_at = now() - make_interval(days => %s + 1) WHERE id = %s",
        (get_settings().account_delete_grace_days, user),
    )
    app.loader.import_default_modules()
    steps: dict[str, float] = {}
    apply_in_batches = erasure.apply_in_batches

    def timed(run, key, *args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            apply_in_batches(run, key, *args, **kwargs)
        finally:
            steps[key] = round(steps.get(key, 0) + time.perf_counter() - started, 2)

    erasure.apply_in_batches = timed
    try:
        started = time.perf_counter()
        result = app.tasks["maintenance.erase_deleted_accounts"].apply()
        elapsed = time.perf_counter() - started
    finally:
        erasure.apply_in_batches = apply_in_batches
    assert result.successful(), result.result
    assert result.result["status"] == "succeeded", result.result
    return result.result["counts"], elapsed, steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--others", type=int, default=100)
    parser.add_argument("--traffic", type=int, help="the others' messages (default: --messages)")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--file-mib", type=int, default=8)
    parser.add_argument("--export-child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child:
        export_child(*args.export_child)
        return

    with (
        tempfile.TemporaryDirectory(prefix="veza-bench-lifecycle-") as storage_dir,
        bench_database("veza_bench_lifecycle") as url,
    ):
        os.environ |= {"STORAGE_BACKEND": "local", "STORAGE_DIR": storage_dir}
        from db.engine import libpq_url
        from veza.settings import reload_settings

        reload_settings()
        conn = psycopg.connect(libpq_url(url, kind="maintenance"), autocommit=True)
        started = time.perf_counter()
        traffic = args.traffic or args.messages
        if traffic < args.messages:
            parser.error("--traffic must be at least --messages (the user's replies need parents)")
        user, empty = generate(conn, args.messages, args.rooms, args.others, args.days, traffic)
        add_files(conn, user, args.files, args.file_mib)
        generated_s = time.perf_counter() - started
        total = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        print(f"generated {total} messages ({args.messages} the user's) in {generated_s:.0f} s")
        before = counter_mismatches(conn)
        assert not any(before.values()), before

        exported = export_in_subprocess(conn, user, empty)
        assert exported["export_messages"] == args.messages, exported
        print(
            f"export:  {exported['export_rows']} rows, {exported['export_mib']} MiB zip"
            f" in {exported['export_s']} s; peak RSS +{exported['export_rss_growth_mib']} MiB"
            f" (from {exported['export_peak_rss_before_mib']} MiB) (goal < 32 MiB)"
        )

        bare_rows, bare_s = bare_update(conn, user)
        quiet_rows, quiet_s = bare_update(conn, user, triggers=False)
        conn.execute("VACUUM ANALYZE messages")
        counts, erase_s, steps = erase(conn, user)
        mismatches = counter_mismatches(conn)
        erased_rows = counts["messages_erased"]
        left = conn.execute(
            "SELECT count(*) FROM messages WHERE author_id = %s AND NOT is_deleted", (user,)
        ).fetchone()[0]
        conn.close()

    erase_rate, bare_rate = erased_rows / erase_s, bare_rows / bare_s
    figures: dict[str, object] = {
        "messages": total,
        "user_messages": args.messages,
        "rooms": args.rooms,
        "generate_s": round(generated_s, 1),
        **exported,
        "erase_messages": erased_rows,
        "erase_s": round(erase_s, 2),
        "erase_rows_s": round(erase_rate),
        "bare_update_rows": bare_rows,
        "bare_update_s": round(bare_s, 2),
        "bare_update_rows_s": round(bare_rate),
        "erase_ratio": round(erase_rate / bare_rate, 3),
        "bare_update_no_triggers_rows_s": round(quiet_rows / quiet_s),
        "erase_messages_step_s": steps["messages_erased"],
        "erase_messages_step_rows_s": round(erased_rows / steps["messages_erased"]),
        "erase_counts": counts,
        "erase_step_s": steps,
        "messages_left_live": left,
        "counter_mismatches": mismatches,
        "counters_exact": not any(mismatches.values()),
    }
    print(
        f"erasure: {figures['erase_rows_s']} rows/s ({erased_rows} messages in"
        f" {figures['erase_s']} s, the whole run) vs bare batched UPDATE"
        f" {figures['bare_update_rows_s']} rows/s -> {figures['erase_ratio']}x (goal >= 0.5x)"
    )
    print(
        f"         the messages step alone: {figures['erase_messages_step_rows_s']} rows/s"
        f" ({figures['erase_messages_step_s']} s); steps (s): {steps}"
    )
    print(
        f"         (the same bare UPDATE with the triggers disabled:"
        f" {figures['bare_update_no_triggers_rows_s']} rows/s)"
    )
    print(f"counters exact afterwards: {figures['counters_exact']} {mismatches}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
