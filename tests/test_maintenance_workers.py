"""Maintenance on real workers: one run at a time, progress, and a purge
killed in each of its phases that a re-run finishes with the same end
state. A kill lands where the test chooses: the test holds a lock the
purge needs at that point and waits until the purge waits on it."""

from __future__ import annotations

import itertools
import os
import signal
from datetime import UTC, datetime

import psycopg
import pytest

from db.partitions import add_months, partition_name, this_month
from tests.conftest import start_worker, wait_for
from tests.factories import make_room, make_user, scalar
from tests.maintenance_helpers import (
    counter_mismatches,
    fill_retention_rooms,
    index_members,
    run_task,
    runs,
    waiting_on_a_lock,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PURGE = "maintenance.purge_retention"
OLD, YOUNG, ROOMS = 6_000, 50, 10


def fill_rooms(db) -> list[int]:
    return fill_retention_rooms(db, OLD, YOUNG, ROOMS)


def assert_purged(db) -> None:
    assert scalar(db, "SELECT count(*) FROM messages WHERE content LIKE 'young %%'") == YOUNG
    assert scalar(db, "SELECT count(*) FROM messages WHERE content LIKE 'old %%'") == 0
    assert scalar(db, "SELECT count(*) FROM messages WHERE content = 'kept'") == 1
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


def kill_the_purge_while_blocked(db, lock: str, params=()) -> None:
    """Run the purge on a real worker while another session holds `lock`
    (SQL run in an open transaction), so the purge stops at a known point
    of its work, deterministically: wait until its backend waits on that
    lock, SIGKILL the worker, then let go of the lock. The test must have
    run a purge first: dropping an empty old partition takes locks that
    most row locks would block, which is not the point being tested."""
    from worker import app

    worker = start_worker("maint-kill", queues="maintenance", concurrency=1)
    try:
        with psycopg.connect(db.info.dsn) as holder:
            holder.execute(lock, params)
            app.send_task(PURGE)
            wait_for(
                lambda: waiting_on_a_lock(db),
                timeout=60,
                interval=0.05,
                what="the purge to block on the held lock",
            )
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()
            holder.rollback()
        # The killed run's lock dies with its backend, which PostgreSQL ends
        # only once it notices the closed socket: a next run before then
        # would be `skipped` (seen on a loaded machine).
        wait_for(
            lambda: (
                not scalar(
                    db,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
            ),
            timeout=30,
            what="the killed run's lock to be released",
        )
    finally:
        worker.stop()


def test_a_purge_killed_in_its_room_batches_is_finished_by_the_next_run(mdb, redis_client):
    run_task(PURGE)
    rooms = fill_rooms(mdb)
    # The sixth room's first delete must update its row: the purge stops
    # there, with five rooms done.
    kill_the_purge_while_blocked(mdb, "SELECT 1 FROM rooms WHERE id = %s FOR UPDATE", (rooms[5],))

    remaining = scalar(mdb, "SELECT count(*) FROM messages WHERE content LIKE 'old %%'")
    assert remaining == OLD - 5 * (OLD // ROOMS)
    # Whatever a batch did, it did whole: archive and live rows never overlap.
    assert (
        scalar(
            mdb,
            "SELECT count(*) FROM archived_messages a JOIN messages m"
            " ON m.id = a.id AND m.created_at = a.created_at",
        )
        == 0
    )
    assert counter_mismatches(mdb) == []

    run_task(PURGE)

    assert_purged(mdb)
    assert [s[0] for s in runs(mdb, PURGE)] == ["succeeded", "failed", "succeeded"]


def fill_old_month(db, months_ago: int, count: int) -> tuple[str, int]:
    """`count` messages (each with a reaction) in a month long past every
    retention, in a room with a 1-day retention: the month is dropped
    whole. Returns the partition's name and the id of its middle message."""
    author = make_user(db, "old-author")
    room = make_room(db, author, "old-short", message_retention_days=1)
    month = add_months(this_month(), -months_ago)
    db.execute("SELECT create_monthly_partitions('messages', %s, 1)", (month,))
    db.execute(
        "INSERT INTO messages (room_id, author_id, content, created_at)"
        " SELECT %s, %s, 'old ' || g, %s + g * interval '1 second' FROM generate_series(1, %s) g",
        (room, author, datetime(month.year, month.month, 1, tzinfo=UTC), count),
    )
    db.execute(
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji)"
        " SELECT id, created_at, author_id, '+1' FROM messages WHERE room_id = %s",
        (room,),
    )
    index_members(db)
    middle = scalar(
        db,
        "SELECT id FROM messages WHERE room_id = %s ORDER BY created_at, id OFFSET %s LIMIT 1",
        (room, count // 2),
    )
    return partition_name("messages", month), middle


def test_a_purge_killed_while_unlinking_a_month_is_finished_by_the_next_run(mdb, redis_client):
    run_task(PURGE)
    name, middle = fill_old_month(mdb, months_ago=4, count=3000)
    # Deleting the middle message's reaction waits for that row's lock: the
    # unlinking stops there, half done.
    kill_the_purge_while_blocked(
        mdb, "SELECT 1 FROM reactions WHERE message_id = %s FOR UPDATE", (middle,)
    )

    assert 0 < scalar(mdb, "SELECT count(*) FROM archived_messages") < 3000
    assert scalar(mdb, "SELECT count(*) FROM messages") == 3000  # nothing dropped yet
    assert counter_mismatches(mdb) == []

    run_task(PURGE)

    assert scalar(mdb, "SELECT to_regclass(%s)", (name,)) is None
    assert scalar(mdb, "SELECT count(*) FROM messages") == 0
    assert scalar(mdb, "SELECT count(*) FROM archived_messages") == 3000
    assert scalar(mdb, "SELECT count(*) FROM archived_reactions") == 3000
    assert counter_mismatches(mdb) == []
    assert [s[0] for s in runs(mdb, PURGE)] == ["succeeded", "failed", "succeeded"]


def test_a_purge_killed_in_its_archive_purge_is_finished_by_the_next_run(mdb, redis_client):
    fill_rooms(mdb)
    run_task(PURGE)
    mdb.execute("UPDATE archived_messages SET archived_at = now() - interval '400 days'")
    mdb.execute("UPDATE archived_reactions SET archived_at = now() - interval '400 days'")
    # The archive's messages go first, then its reactions: the purge stops
    # between the two.
    kill_the_purge_while_blocked(mdb, "LOCK TABLE archived_reactions IN SHARE MODE")

    assert scalar(mdb, "SELECT count(*) FROM archived_messages") == 0
    assert scalar(mdb, "SELECT count(*) FROM archived_reactions") == OLD

    run_task(PURGE)

    assert scalar(mdb, "SELECT count(*) FROM archived_reactions") == 0
    assert counter_mismatches(mdb) == []
    assert [s[0] for s in runs(mdb, PURGE)] == ["succeeded", "failed", "succeeded"]


def test_each_phase_gets_its_share_and_runs_resume_where_the_last_stopped(mdb):
    """With no time at all, every phase still does one batch per run: a
    huge month cannot starve the room purges, and each run goes on from
    where the last stopped instead of starting over."""
    from veza.maintenance.run import Run
    from veza.messages import retention
    from worker import app

    app.loader.import_default_modules()
    rooms = fill_rooms(mdb)
    name, _ = fill_old_month(mdb, months_ago=4, count=1200)

    def one_run() -> Run:
        run = Run(PURGE, 0, False, budget_seconds=0)
        retention.purge(run)
        return run

    first = one_run()
    # One batch each: the month's, and the first room's.
    assert first.counts["archived_messages"] == 2 * 500
    assert (
        scalar(
            mdb,
            "SELECT count(*) FROM messages WHERE room_id = %s AND content LIKE 'old %%'",
            (rooms[0],),
        )
        == OLD // ROOMS - 500
    )
    assert (
        first.counts["partition_drop_out_of_time"] == first.counts["room_batches_out_of_time"] == 1
    )
    archived = [scalar(mdb, "SELECT count(*) FROM archived_messages")]
    for _ in range(60):
        if (
            scalar(mdb, "SELECT to_regclass(%s) IS NULL", (name,))
            and scalar(mdb, "SELECT count(*) FROM messages WHERE content LIKE 'old %%'") == 0
        ):
            break
        one_run()
        archived.append(scalar(mdb, "SELECT count(*) FROM archived_messages"))
    else:
        raise AssertionError("repeated runs never finished the purge")
    assert all(a < b for a, b in itertools.pairwise(archived)), "a run made no progress"
    assert archived[-1] == 1200 + OLD
    assert counter_mismatches(mdb) == []


def test_a_run_that_loses_its_lock_connection_stops_and_is_recorded_failed(mdb):
    """The lock lives on its own idle connection: if PostgreSQL drops it,
    the lock is gone and another run may start, so this one must stop."""
    from veza.maintenance.run import LockLost, run_exclusively
    from worker import app

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
        run_exclusively(PURGE, body, False, {})

    assert batches_after_the_loss == []
    [(status, error)] = mdb.execute(
        "SELECT status, error FROM maintenance_runs WHERE task_name = %s", (PURGE,)
    ).fetchall()
    assert status == "failed"
    assert error.startswith("LockLost")
