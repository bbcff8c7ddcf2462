"""Maintenance on real workers: one run at a time, progress, and a purge
killed mid-way that a re-run finishes with the same end state."""

from __future__ import annotations

import os
import signal

import pytest
from celery.result import AsyncResult

from tests.conftest import start_worker, wait_for
from tests.maintenance_helpers import (  # noqa: F401 (mdb is a fixture)
    counter_mismatches,
    index_members,
    make_room,
    make_user,
    mdb,
    run_task,
    runs,
    scalar,
)

PURGE = "maintenance.purge_retention"
OLD, YOUNG, ROOMS = 12_000, 50, 10


def fill_rooms(db) -> list[int]:
    """ROOMS rooms with a 1-day retention, each with OLD/ROOMS messages 2-3
    days old and YOUNG/ROOMS recent ones, every message with a reaction.
    Set-based, one statement per room and age (the counter triggers update
    the room's row per message; one statement per room keeps that cheap)."""
    author = make_user(db, "author")
    rooms = [make_room(db, author, f"busy{i}", message_retention_days=1) for i in range(ROOMS)]
    for room in rooms:
        db.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at)"
            " SELECT %s, %s, 'old ' || g, now() - interval '2 days' - g * interval '1 second'"
            " FROM generate_series(1, %s) g",
            (room, author, OLD // ROOMS),
        )
        db.execute(
            "INSERT INTO messages (room_id, author_id, content)"
            " SELECT %s, %s, 'young ' || g FROM generate_series(1, %s) g",
            (room, author, YOUNG // ROOMS),
        )
    db.execute(
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji)"
        " SELECT id, created_at, author_id, '+1' FROM messages"
    )
    index_members(db)
    return rooms


def assert_purged(db) -> None:
    assert scalar(db, "SELECT count(*) FROM messages") == YOUNG
    assert scalar(db, "SELECT count(*) FROM messages WHERE content LIKE 'old %%'") == 0
    assert scalar(db, "SELECT count(*) FROM archived_messages") == OLD
    assert scalar(db, "SELECT count(*) FROM archived_reactions") == OLD
    assert scalar(db, "SELECT count(*) FROM reactions") == YOUNG
    assert counter_mismatches(db) == []


def test_two_purges_at_once_one_skips_and_progress_is_published(mdb, redis_client):
    from worker import app

    fill_rooms(mdb)
    worker = start_worker("maint-pair", queues="maintenance", concurrency=2)
    try:
        first, second = app.send_task(PURGE), app.send_task(PURGE)
        outcomes = sorted(r.get(timeout=120)["status"] for r in (first, second))
    finally:
        worker.stop()
    assert outcomes == ["skipped", "succeeded"]
    assert sorted(r[0] for r in runs(mdb, PURGE)) == ["skipped", "succeeded"]
    assert scalar(mdb, "SELECT count(*) FROM audit_logs WHERE event_type = %s", (PURGE,)) == 2
    assert_purged(mdb)


def test_a_purge_killed_mid_way_is_finished_by_the_next_run(mdb, redis_client):
    from worker import app

    fill_rooms(mdb)
    worker = start_worker("maint-kill", queues="maintenance", concurrency=1)
    try:
        result = app.send_task(PURGE)
        # PROGRESS is published after each committed batch: kill then.
        wait_for(lambda: AsyncResult(result.id, app=app).state == "PROGRESS", timeout=60,
                 interval=0.02, what="the purge to report progress")
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
    finally:
        worker.stop()
    remaining = scalar(mdb, "SELECT count(*) FROM messages WHERE content LIKE 'old %%'")
    assert 0 < remaining < OLD, "the kill must land in the middle of the purge"
    # Whatever a batch did, it did whole: archive and live rows never overlap.
    assert scalar(mdb, "SELECT count(*) FROM archived_messages a JOIN messages m"
                       " ON m.id = a.id AND m.created_at = a.created_at") == 0
    assert counter_mismatches(mdb) == []

    run_task(PURGE)

    assert_purged(mdb)
    statuses = runs(mdb, PURGE)
    assert [s[0] for s in statuses] == ["failed", "succeeded"]


def test_a_run_that_loses_its_lock_connection_stops_and_is_recorded_failed(mdb):
    """The lock lives on its own idle connection: if PostgreSQL drops it,
    the lock is gone and another run may start, so this one must stop."""
    from worker import app
    from worker.maintenance.run import LockLost, run_exclusively

    batches_after_the_loss = []

    def body(run):
        mdb.execute(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l"
            " JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        )
        run.progress(force=True)
        batches_after_the_loss.append(1)

    app.loader.import_default_modules()
    with pytest.raises(LockLost):
        run_exclusively(app.tasks[PURGE], PURGE, body, False, {})

    assert batches_after_the_loss == []
    [(status, error)] = mdb.execute(
        "SELECT status, error FROM maintenance_runs WHERE task_name = %s", (PURGE,)).fetchall()
    assert status == "failed" and error.startswith("LockLost")
