"""Chaos: workers killed mid-task. SIGKILL loses nothing (acks_late and
reject_on_worker_lost put the task back); SIGTERM shuts down warm, finishing
the task in flight or handing it back to the queue."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import start_worker, wait_for
from tests.factories import make_user
from tests.processes import pool_children
from tests.uploads import encoded, gradient, upload

pytestmark = pytest.mark.slow


def file_states(db, ids: list[int]) -> list[tuple]:
    return db.execute(
        "SELECT processing_status::text, virus_scan_status::text, file_hash, thumbnail_path"
        " FROM files WHERE id = ANY(%s)",
        (ids,),
    ).fetchall()


def stored(kind: str) -> list[str]:
    from veza.storage import get_storage

    storage = get_storage()

    root = storage.absolute(kind)
    return [p.name for p in root.rglob("*") if p.is_file()] if root.exists() else []


def hundred_uploads(db) -> list[int]:
    """100 uploads: 40 distinct pictures, 40 copies of them, 20 text files."""
    user = make_user(db)
    rng = random.Random(5)
    pictures = [
        encoded(gradient(rng.randint(200, 900), rng.randint(200, 900)), "PNG") for _ in range(40)
    ]
    ids = [
        upload(db, user, content, f"p{i}.png", "image/png") for i, content in enumerate(pictures)
    ]
    ids += [
        upload(db, user, content, f"copy{i}.png", "image/png") for i, content in enumerate(pictures)
    ]
    ids += [
        upload(db, user, f"notes {i}\n".encode() * 50, f"n{i}.txt", "text/plain") for i in range(20)
    ]
    return ids


def empty_storage() -> None:
    """Blob counts below are of this test's files alone."""
    from veza.storage import get_storage

    storage = get_storage()

    for child in storage.root.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def test_sigkill_twenty_times_across_a_hundred_uploads_loses_nothing(db, clamd_server):
    from worker import app

    empty_storage()
    ids = hundred_uploads(db)
    worker = start_worker("killed", queues="files,scan", concurrency=2)
    try:
        for file_id in ids:
            app.send_task("files.process", args=[file_id])
        kills, rng = 0, random.Random(9)
        deadline = time.monotonic() + 120
        while kills < 20 and time.monotonic() < deadline:
            children = pool_children(worker)
            if children:
                try:
                    os.kill(rng.choice(children), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass  # that child had just been replaced
            time.sleep(rng.uniform(0.1, 0.4))
        assert kills == 20
        # The kills hit tasks in flight, not just idle processes.
        wait_for(
            lambda: "WorkerLostError" in worker.output(),
            timeout=10,
            what="a task lost with its process",
        )

        wait_for(
            lambda: all(s[0] in ("completed", "failed") for s in file_states(db, ids)),
            timeout=240,
            interval=0.5,
            what="all 100 files to finish",
        )
    finally:
        worker.stop()

    states = file_states(db, ids)
    assert [s[:2] for s in states] == [("completed", "clean")] * 100
    hashes = {s[2] for s in states}
    assert sorted(stored("blobs")) == sorted(hashes)  # one blob per content, none extra
    # Each image's renditions (one or two sizes: 200 to 900 px), and no others.
    thumbnailed = {s[2] for s in states if s[3]}
    assert len(thumbnailed) == 40
    assert {name.split("-")[0] for name in stored("thumbs")} == thumbnailed
    assert {Path(s[3]).name for s in states if s[3]} <= set(stored("thumbs"))
    assert stored("uploads") == []  # nothing left behind in staging


def test_sigterm_finishes_or_hands_back_the_task_in_flight(db, clamd_server):
    from worker import app

    user = make_user(db)
    ids = [upload(db, user, os.urandom(40 * 1024 * 1024), f"big{i}.bin") for i in range(3)]
    worker = start_worker("terminated", queues="files,scan", concurrency=1)
    for file_id in ids:
        app.send_task("files.process", args=[file_id])
    wait_for(
        lambda: any(s[0] == "processing" for s in file_states(db, ids)),
        timeout=60,
        interval=0.05,
        what="a file in flight",
    )
    worker.proc.send_signal(signal.SIGTERM)
    try:
        exit_code = worker.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("warm shutdown did not end")
    finally:
        worker.stop()
    assert exit_code == 0

    # Whatever the stopped worker did not finish is still owed: a new worker does it.
    successor = start_worker("successor", queues="files,scan", concurrency=1, purge=False)
    try:
        wait_for(
            lambda: all(s[0] == "completed" for s in file_states(db, ids)),
            timeout=180,
            interval=0.5,
            what="the remaining files to finish",
        )
    finally:
        successor.stop()
