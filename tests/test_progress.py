"""Progress operators can see: a purge's phase and counts, and a large
upload's phase and bytes, on Flower's task page and its API while the job
runs, then the job's real result."""

from __future__ import annotations

import ast
import base64
import json
import os
import urllib.request

import psycopg
import pytest
from celery.result import AsyncResult
from tornado.escape import xhtml_escape

from tests.conftest import start_worker, wait_for
from tests.factories import make_room, make_user, partitions_since, scalar
from tests.maintenance_helpers import index_members, run_task
from tests.processes import free_port, start_flower
from tests.test_maintenance_workers import waiting_on_a_lock
from tests.uploads import upload

LOGIN = "ops:progress-watch"
PURGE = "maintenance.purge_retention"
MiB = 1024 * 1024


def test_throttled_lets_one_report_through_per_interval_and_every_forced_one():
    from veza.progress import Throttled

    seen: list[dict] = []
    report = Throttled(seen.append, interval=3600)
    report({"n": 1})
    report({"n": 2})
    report({"n": 3}, force=True)
    report({"n": 4})
    assert seen == [{"n": 1}, {"n": 3}]


@pytest.fixture
def every_report(monkeypatch):
    """Reports unthrottled, so that a test sees each one a job makes."""
    monkeypatch.setattr("veza.progress.INTERVAL_SECONDS", 0.0)


def test_hashing_a_large_upload_reports_its_bytes_and_a_small_one_reports_nothing(db, every_report):
    from veza.files import pipeline

    user = make_user(db)
    size = pipeline.LARGE_FILE_BYTES + MiB // 2
    large, small = upload(db, user, os.urandom(size)), upload(db, user, b"small")
    reports: list[dict] = []

    pipeline.hash_upload(large, report=reports.append)
    pipeline.hash_upload(small, report=reports.append)

    assert {(r["file_id"], r["phase"], r["bytes_total"]) for r in reports} == {
        (large, "hash", size)
    }
    done = [r["bytes_done"] for r in reports]
    chunks = -(-size // pipeline.HASH_CHUNK_BYTES)
    assert done == [min(n * pipeline.HASH_CHUNK_BYTES, size) for n in range(chunks + 1)]


def rooms_to_purge(db) -> list[int]:
    """Two rooms with a 1-day retention, each with old messages, and one
    old message in a room that keeps everything (so no month is covered
    whole: the purge goes by rooms, on any day of the month)."""
    author = make_user(db)
    partitions_since(db, "4 days")
    rooms = [make_room(db, author, f"short{i}", message_retention_days=1) for i in range(2)]
    keeper = make_room(db, author, "forever", message_retention_days=0)
    for room, age in ((rooms[0], "2 days"), (rooms[1], "2 days"), (keeper, "3 days")):
        db.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at)"
            " SELECT %s, %s, 'old', now() - CAST(%s AS interval) FROM generate_series(1, 20)",
            (room, author, age),
        )
    index_members(db)
    return rooms


def flower_get(port: int, path: str) -> bytes | None:
    """A page of Flower's, logged in; None for a task Flower has not heard of."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(LOGIN.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def flower_task(port: int, task_id: str) -> dict | None:
    """Flower's /api/task/info of a task."""
    body = flower_get(port, f"/api/task/info/{task_id}")
    return None if body is None else json.loads(body)


def flower_state(port: int, task_id: str, state: str) -> dict | None:
    info = flower_task(port, task_id)
    return info if info and info["state"] == state else None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_flower_shows_a_purge_s_phase_and_counts_while_it_runs_then_its_result(db, redis_client):
    """The purge is held at a known point (a room's row lock, as in
    tests/test_maintenance_workers.py): in its room batches, one room
    done. Flower must show that phase and the counts the task's own state
    holds, then the task's result."""
    from worker import app

    # Past months earlier tests left are dropped first: detaching one waits
    # for every open transaction, the held lock's too.
    run_task(PURGE)
    rooms = rooms_to_purge(db)
    port = free_port()
    flower = start_flower(port, LOGIN)
    worker = start_worker("maint-progress", queues="maintenance", concurrency=1)
    try:
        # Flower hears this worker's events once it shows a task's end.
        warm_up = app.send_task("maintenance.expire_sessions")
        wait_for(
            lambda: flower_state(port, warm_up.id, "SUCCESS"), timeout=60, what="flower events"
        )
        with psycopg.connect(db.info.dsn) as holder:
            holder.execute("SELECT 1 FROM rooms WHERE id = %s FOR UPDATE", (rooms[1],))
            purge = app.send_task(PURGE)
            wait_for(lambda: waiting_on_a_lock(db), timeout=60, what="the purge to block")
            live = wait_for(
                lambda: flower_state(port, purge.id, "PROGRESS"), what="flower to show PROGRESS"
            )
            page = flower_get(port, f"/task/{purge.id}")
            stored = AsyncResult(purge.id, app=app)
            stored_state, stored_progress = stored.state, stored.info
            running = scalar(db, "SELECT id FROM maintenance_runs WHERE task_id = %s", (purge.id,))
            holder.rollback()
        outcome = purge.get(timeout=120)
        done = wait_for(
            lambda: flower_state(port, purge.id, "SUCCESS"), what="flower to show SUCCESS"
        )
    finally:
        worker.stop()
        flower.stop()
    progress = ast.literal_eval(live["result"])
    # The task page shows the same, as its Result (templates/task.html escapes it).
    assert page is not None
    assert xhtml_escape(live["result"]).encode() in page
    assert progress["run_id"] == running
    assert progress["phase"] == "room_batches"
    assert (stored_state, stored_progress) == ("PROGRESS", progress)
    assert progress["dry_run"] is False
    assert ast.literal_eval(done["result"]) == outcome
    assert outcome["status"] == "succeeded"
