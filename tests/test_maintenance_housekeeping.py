"""Partitions, sessions, files, stats and file jobs maintenance."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from db.migrations.sqlfile import seed_section
from tests.conftest import ROOT
from tests.factories import make_room, make_user, post, scalar
from tests.maintenance_helpers import run_task, runs
from tests.processes import veza

# ------------------------------------------------------------- partitions


def test_partitions_are_made_ahead_across_a_year_end_boundary(mdb):
    db = mdb
    db.execute("DROP TABLE IF EXISTS messages_y2031m01, audit_logs_y2031m01")

    result = run_task("maintenance.ensure_partitions", today="2030-12-31", months_ahead=3)

    for month in ("2030m12", "2031m01", "2031m02", "2031m03"):
        assert (
            scalar(db, "SELECT to_regclass(%s)::text", (f"messages_y{month}",))
            == f"messages_y{month}"
        )
        assert (
            scalar(db, "SELECT to_regclass(%s)::text", (f"audit_logs_y{month}",))
            == f"audit_logs_y{month}"
        )
    # next month was missing: an error, audited
    assert result["counts"]["missing_next_month"] == 2
    assert (
        scalar(
            db,
            "SELECT count(*) FROM audit_logs WHERE event_type = 'maintenance.partition_missing'"
            " AND severity = 'error'",
        )
        == 2
    )
    owner = make_user(db, "owner")
    room = make_room(db, owner)
    for at, partition in (
        ("2030-12-31 23:59:59.999+00", "messages_y2030m12"),
        ("2031-01-01 00:00:00+00", "messages_y2031m01"),
    ):
        message = post(db, owner, room, created_at=at)
        assert (
            scalar(db, "SELECT tableoid::regclass::text FROM messages WHERE id = %s", (message[0],))
            == partition
        )

    again = run_task("maintenance.ensure_partitions", today="2030-12-31", months_ahead=3)
    assert again["counts"].get("partitions_created", 0) == 0
    assert "missing_next_month" not in again["counts"]


# --------------------------------------------------------------- sessions


def test_sessions_expire_then_go_and_ended_locks_are_reset(mdb):
    db = mdb
    user = make_user(db, "someone")
    locked = make_user(db, "locked")
    still_locked = make_user(db, "stilllocked")
    sessions = {
        "live": "now() + interval '1 day'",
        "expired": "now() - interval '1 hour'",
        "long_expired": "now() - interval '30 days'",
    }
    for name, expires in sessions.items():
        db.execute(
            "INSERT INTO user_sessions (user_id, token_hash, created_at, expires_at)"
            f" VALUES (%s, %s, now() - interval '60 days', {expires})",
            (user, name.ljust(64, "x")),
        )
    db.execute(
        "UPDATE users SET failed_login_attempts = 5, locked_until = now() - interval '1 minute'"
        " WHERE id = %s",
        (locked,),
    )
    db.execute(
        "UPDATE users SET failed_login_attempts = 5, locked_until = now() + interval '1 hour'"
        " WHERE id = %s",
        (still_locked,),
    )

    dry = run_task("maintenance.expire_sessions", dry_run=True)
    assert dry["counts"]["sessions_deactivated"] == 2
    assert scalar(db, "SELECT count(*) FROM user_sessions WHERE is_active") == 3

    run_task("maintenance.expire_sessions")

    rows = dict(db.execute("SELECT left(token_hash, 12), is_active FROM user_sessions").fetchall())
    assert rows == {"livexxxxxxxx": True, "expiredxxxxx": False}
    assert db.execute(
        "SELECT failed_login_attempts, locked_until FROM users WHERE id = %s", (locked,)
    ).fetchone() == (0, None)
    assert scalar(db, "SELECT failed_login_attempts FROM users WHERE id = %s", (still_locked,)) == 5


def test_finished_outbox_rows_are_pruned_after_the_retention(mdb):
    db = mdb
    db.execute(
        "INSERT INTO outbox (task_name, sent_at, finished_at, dead_at) VALUES"
        " ('old', now() - interval '30 days', now() - interval '30 days', NULL),"
        " ('recent', now(), now(), NULL), ('unsent', NULL, NULL, NULL),"
        " ('never finished', now() - interval '30 days', NULL, NULL),"
        " ('dead', now() - interval '30 days', NULL, now() - interval '29 days')"
    )
    run_task("maintenance.expire_sessions")
    assert {r[0] for r in db.execute("SELECT task_name FROM outbox")} == {
        "recent",
        "unsent",
        "never finished",
        "dead",
    }


def test_notifications_read_long_ago_are_pruned_and_unread_ones_stay(mdb):
    db = mdb
    alice, bob = make_user(db), make_user(db)
    room = make_room(db, alice)
    said = [post(db, alice, room, content=f"{n}") for n in range(3)]
    db.execute(
        "INSERT INTO notifications (user_id, kind, message_id, message_created_at, room_id,"
        " read_at)"
        " SELECT %s, 'message', m.id, m.created_at, m.room_id, r.read_at"
        " FROM messages m JOIN (VALUES (%s, now() - interval '91 days'),"
        "   (%s, now() - interval '89 days'), (%s, NULL::timestamptz)) r(id, read_at)"
        " ON r.id = m.id",
        (bob, *(message[0] for message in said)),
    )
    result = run_task("maintenance.expire_sessions")
    assert result["counts"]["notifications_deleted"] == 1
    kept = {row[0] for row in db.execute("SELECT message_id FROM notifications")}
    assert kept == {said[1][0], said[2][0]}


# ------------------------------------------------------------------ files


def store(relative: str, age_seconds: float = 0) -> Path:
    from veza.storage import get_storage

    storage = get_storage()

    path = storage.absolute(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"content")
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    return path


def file_row(
    db,
    owner,
    sha: str | None,
    path: str,
    expires: str = "NULL",
    table: str = "files",
    status: str = "completed",
) -> None:
    db.execute(
        f"INSERT INTO {table} (id, uuid, filename, original_filename, file_path, file_size, mime_type,"
        " file_hash, uploaded_by, processing_status, virus_scan_status, metadata, download_count,"
        f" created_at, expires_at, is_processed) VALUES ("
        f" nextval('files_id_seq'), gen_random_uuid(), 'f', 'f', %s, 7, 'text/plain', %s, %s,"
        f" %s, 'clean', '{{}}', 0, now() - interval '2 hours', {expires}, true)",
        (path, sha, owner, status),
    )


def test_expiry_and_orphan_sweep_never_remove_referenced_or_young_content(mdb):
    from veza.storage import get_storage

    storage = get_storage()

    db = mdb
    owner = make_user(db, "owner")
    hour = 3600
    sha = {
        name: hashlib.sha256(name.encode()).hexdigest()
        for name in ("kept", "archived", "orphan", "young", "shared", "expired")
    }
    paths = {name: store(storage.blob_path(h), 2 * hour) for name, h in sha.items()}
    paths["young"] = store(storage.blob_path(sha["young"]), 60)
    orphan_thumb = store(storage.rendition_path(sha["orphan"], 400, False), 2 * hour)
    kept_thumb = store(storage.rendition_path(sha["kept"], 400, False), 2 * hour)
    stale_upload = store("uploads/0b6f8c3e-7f7e-4f5e-9d7f-2c5a3f1b9a10", 2 * hour)

    file_row(db, owner, sha["kept"], storage.blob_path(sha["kept"]))
    file_row(db, owner, sha["archived"], storage.blob_path(sha["archived"]), table="archived_files")
    # two rows share the hash; only one expires
    file_row(
        db,
        owner,
        sha["shared"],
        storage.blob_path(sha["shared"]),
        expires="now() - interval '1 hour'",
    )
    file_row(db, owner, sha["shared"], storage.blob_path(sha["shared"]))
    file_row(
        db,
        owner,
        sha["expired"],
        storage.blob_path(sha["expired"]),
        expires="now() - interval '1 hour'",
    )
    file_row(db, owner, "9" * 64, storage.blob_path("9" * 64))  # its content is missing

    result = run_task("maintenance.purge_expired_files")

    gone = {name for name, path in paths.items() if not path.exists()}
    assert gone == {"orphan", "expired"}
    assert not orphan_thumb.exists()
    assert not stale_upload.exists()
    assert kept_thumb.exists()
    assert scalar(db, "SELECT count(*) FROM files WHERE file_hash = %s", (sha["shared"],)) == 1
    assert scalar(db, "SELECT count(*) FROM files WHERE file_hash = %s", (sha["expired"],)) == 0
    failed = db.execute(
        "SELECT processing_status, metadata->>'failure_reason' FROM files WHERE file_hash = %s",
        ("9" * 64,),
    ).fetchone()
    assert failed[0] == "failed"
    assert "missing" in failed[1]
    assert result["counts"]["blobs_missing"] == 1


# ------------------------------------------------------------------ stats


def test_rollup_stats_equal_the_seed_view(mdb):
    db = mdb
    users = [make_user(db, f"user{i}") for i in range(4)]
    rooms = [make_room(db, users[0], f"room{i}") for i in range(4)]
    db.execute("UPDATE rooms SET is_archived = true WHERE id = %s", (rooms[3],))
    db.execute("INSERT INTO room_members (room_id, user_id) SELECT %s, id FROM users", (rooms[0],))
    ages = ["1 hour", "23 hours", "25 hours", "6 days", "8 days", "40 days"]
    for i, age in enumerate(ages * 3):
        room, author = rooms[i % 3], users[i % 4]
        message = db.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at, is_deleted)"
            f" VALUES (%s, %s, 'x', now() - interval '{age}', %s) RETURNING id, created_at",
            (room, author, i % 7 == 0),
        ).fetchone()
        for reactor in users[: i % 3]:
            db.execute(
                "INSERT INTO reactions (message_id, message_created_at, user_id, emoji,"
                f" created_at) VALUES (%s, %s, %s, 'x', now() - interval '{ages[i % 4]}')",
                (message[0], message[1], reactor),
            )
    run_task("maintenance.refresh_room_stats")  # the task path works, and so on
    columns = (
        "room_id, name, member_count, total_messages, messages_24h, messages_7d,"
        " active_users_24h, last_message_at, reactions_24h"
    )
    # The seed's own definition of room_stats, from its file (migration 0012
    # made room_stats a view over the rollup).
    seed_query = seed_section("CREATE MATERIALIZED VIEW room_stats AS", "r.member_count;")
    seed_query = seed_query.removeprefix("CREATE MATERIALIZED VIEW room_stats AS").rstrip(";")
    with db.transaction():  # one NOW() for both
        db.execute("SELECT refresh_room_stats()")  # the seed's function: now the rollup's
        view = db.execute(f"SELECT {columns} FROM room_stats ORDER BY room_id").fetchall()
        seed = db.execute(f"SELECT {columns} FROM ({seed_query}) s ORDER BY room_id").fetchall()
    assert len(seed) == 3
    assert any(row[4] for row in seed)
    assert any(row[8] for row in seed)
    assert view == seed


# -------------------------------------------------------------- file jobs


def test_stuck_files_are_requeued_only_once_their_work_started_and_stalled_then_failed_retryably(
    mdb,
):
    db = mdb
    owner = make_user(db, "owner")
    file_row(db, owner, None, "uploads/a", status="processing")
    file_row(db, owner, None, "uploads/b", status="pending")
    db.execute("UPDATE files SET virus_scan_status = 'scanning' WHERE file_path = 'uploads/b'")
    # Never picked up, and no owed work on record: pending since yesterday.
    file_row(db, owner, None, "uploads/c", status="pending")
    # Uploaded just now: not stuck yet.
    file_row(db, owner, None, "uploads/d", status="pending")
    db.execute(
        "UPDATE files SET virus_scan_status = 'pending' WHERE file_path IN ('uploads/c', 'uploads/d')"
    )
    db.execute("UPDATE files SET created_at = now() WHERE file_path = 'uploads/d'")
    from veza.settings import get_settings

    def an_hour_later() -> None:
        db.execute(
            "UPDATE files SET metadata = metadata || jsonb_build_object('requeued_at',"
            " now() - interval '1 hour') WHERE file_path <> 'uploads/d'"
        )

    def started_and_stalled() -> None:
        """A worker took each owed task an hour ago, and nothing came of it."""
        db.execute(
            "UPDATE outbox SET started_at = now() - interval '1 hour' WHERE started_at IS NULL"
        )

    def unstarted_per_file() -> list[int]:
        return [
            r[0]
            for r in db.execute(
                "SELECT count(*) FROM outbox WHERE started_at IS NULL GROUP BY args"
            )
        ]

    assert run_task("maintenance.requeue_stale_files")["counts"] == {"stale_requeued": 3}
    for _ in range(1, get_settings().max_file_attempts):
        an_hour_later()
        # Sent but never started (a backlog): waiting, not stuck; no duplicate.
        assert run_task("maintenance.requeue_stale_files")["counts"] == {"stale_waiting": 3}
        assert unstarted_per_file() == [1, 1, 1]
        started_and_stalled()
        assert run_task("maintenance.requeue_stale_files")["counts"] == {"stale_requeued": 3}
        assert unstarted_per_file() == [1, 1, 1]
    assert sorted(db.execute("SELECT task_name, count(*) FROM outbox GROUP BY 1").fetchall()) == [
        ("files.process", 2 * get_settings().max_file_attempts),
        ("files.scan", get_settings().max_file_attempts),
    ]
    an_hour_later()
    started_and_stalled()
    assert run_task("maintenance.requeue_stale_files")["counts"] == {"stale_failed": 3}
    assert db.execute(
        "SELECT processing_status::text, virus_scan_status::text FROM files ORDER BY file_path"
    ).fetchall() == [
        ("failed", "clean"),
        ("failed", "failed"),
        ("failed", "pending"),
        ("pending", "pending"),
    ]
    # Stuck is no final failure_reason: the operator's requeue takes them up.
    reasons = db.execute(
        "SELECT metadata->>'failed_step', metadata->>'error', metadata ? 'failure_reason'"
        " FROM files WHERE processing_status = 'failed'"
    ).fetchall()
    attempts = get_settings().max_file_attempts
    assert set(reasons) == {("stuck", f"stuck: no progress after {attempts} requeues", False)}
    assert scalar(db, "SELECT count(*) FROM outbox") == 3 * attempts
    assert run_task("maintenance.requeue_failed_files")["counts"] == {"failed_requeued": 3}


def test_rescan_retries_failed_scans_and_rescans_files_not_scanned_under_the_current_signatures(
    mdb,
):
    db = mdb
    owner = make_user(db, "owner")
    file_row(db, owner, "a" * 64, "blobs/a")  # clean, recent
    file_row(db, owner, "b" * 64, "blobs/b")
    db.execute(
        'UPDATE files SET metadata = \'{"clamd_version": "27000"}\' WHERE file_hash = %s',
        ("a" * 64,),
    )
    db.execute("UPDATE files SET virus_scan_status = 'failed' WHERE file_hash = %s", ("b" * 64,))
    # Failed for good (clamd could not scan it whole): scanning again cannot help.
    file_row(db, owner, "c" * 64, "blobs/c", status="failed")
    db.execute(
        'UPDATE files SET virus_scan_status = \'failed\', metadata = \'{"failed_step": "scan",'
        ' "failure_reason": "too large to scan"}\' WHERE file_hash = %s',
        ("c" * 64,),
    )
    clean_id = scalar(db, "SELECT id FROM files WHERE file_hash = %s", ("a" * 64,))
    failed_id = scalar(db, "SELECT id FROM files WHERE file_hash = %s", ("b" * 64,))

    def scans() -> list[int]:
        return sorted(
            r[0][0] for r in db.execute("SELECT args FROM outbox WHERE task_name = 'files.scan'")
        )

    run_task("maintenance.rescan_files", signature_version="27000")
    assert scans() == [failed_id]  # the clean one was scanned under 27000 already
    run_task("maintenance.rescan_files", signature_version="27001")
    assert scans() == sorted([failed_id, failed_id, clean_id])
    # Its rescan did not happen (clamd was down through every retry): the
    # row still says 27000, so the next run asks again.
    run_task("maintenance.rescan_files", signature_version="27001")
    assert scans().count(clean_id) == 2


# --------------------------------------------------------------- schedule


def test_every_maintenance_task_is_scheduled_with_expiry_and_overridable():
    code = (
        "import json; from beat_schedule import BEAT_SCHEDULE as s;"
        "print(json.dumps({k: [v['task'], str(v['schedule']), v['options']['expires']]"
        " for k, v in s.items()}))"
    )
    env = {**os.environ, "VEZA_SCHEDULE_PURGE_RETENTION": "*/5 * * * *"}
    out = json.loads(
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    tasks = {v[0] for v in out.values()}
    assert {
        f"maintenance.{n}"
        for n in (
            "purge_retention",
            "purge_expired_files",
            "expire_sessions",
            "ensure_partitions",
            "refresh_room_stats",
            "requeue_stale_files",
            "rescan_files",
            "recount_counters",
        )
    } <= tasks
    assert "*/5" in out["purge_retention"][1]
    assert all(v[2] > 0 for v in out.values())


def test_the_command_line_runs_a_task_dry_and_restores(mdb):
    db = mdb
    owner = make_user(db, "owner")
    room = make_room(db, owner)
    db.execute(
        "INSERT INTO user_sessions (user_id, token_hash, created_at, expires_at)"
        " VALUES (%s, 'x', now() - interval '2 days', now() - interval '1 day')",
        (owner,),
    )

    def veza_json(*args: str) -> dict:
        done = veza(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    dry = veza_json("maintenance", "run", "expire_sessions", "--dry-run")
    assert dry["status"] == "dry_run"
    assert dry["counts"]["sessions_deactivated"] == 1
    assert scalar(db, "SELECT is_active FROM user_sessions") is True
    assert runs(db, "maintenance.expire_sessions")[0][:2] == ("dry_run", True)
    restored = veza_json(
        "restore", "--room", str(room), "--from", "2020-01-01", "--to", "2030-01-01"
    )
    assert restored["messages"] == 0
