"""Chaos: a task that takes its worker down on every delivery. acks_late
hands it back each time; the base class drops it after MAX_DELIVERIES
deliveries instead of letting it kill workers forever, and records it as a
dead outbox row with its reason, which `veza outbox replay` sends again."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from PIL import Image

from tests.conftest import start_worker, wait_for
from tests.factories import make_user, outbox_row
from tests.processes import pool_children, veza
from tests.uploads import encoded, upload

pytestmark = pytest.mark.slow


def received(worker, task_id: str) -> int:
    return len(re.findall(rf"files\.thumbnail\[{task_id}\] received", worker.output()))


def test_a_task_that_kills_its_worker_every_time_is_dropped_after_the_bound(
    db, clamd_server, redis_client, relay
):
    from veza import limits
    from veza.files import pipeline
    from worker import app

    user = make_user(db)
    # A 48 MP PNG: its thumbnail takes about half a second, time to kill it.
    file_id = upload(
        db,
        user,
        encoded(Image.new("RGB", (7000, 6800), (10, 200, 30)), "PNG"),
        "huge.png",
        "image/png",
    )
    for step in (pipeline.hash_upload, pipeline.sniff, pipeline.scan):
        step(file_id)
    # Without a decode budget, so that the thumbnail really decodes the
    # 48 MP image (the shipped budget refuses it before any pixel is read).
    worker = start_worker(
        "poison", queues="files", concurrency=1, env={"THUMBNAIL_DECODE_BUDGET_MIB": "0"}
    )
    try:
        task_id = app.send_task("files.thumbnail", args=[file_id]).id
        for delivery in range(1, limits.MAX_DELIVERIES):
            wait_for(
                lambda delivery=delivery: received(worker, task_id) >= delivery,
                timeout=30,
                what=f"delivery {delivery}",
            )
            time.sleep(0.15)  # inside the thumbnail
            for child in pool_children(worker):
                os.kill(child, signal.SIGKILL)
        wait_for(
            lambda: "dropped: delivered" in worker.output(),
            timeout=60,
            what="the poison message to be dropped",
        )
        assert received(worker, task_id) == limits.MAX_DELIVERIES
        assert worker.proc.poll() is None  # the worker itself lives on
        # Rejected without requeue: off the broker for good, so never delivered again.
        wait_for(
            lambda: (
                not any(
                    task_id in entry.decode(errors="replace")
                    for entry in redis_client.hvals("unacked")
                )
            ),
            what="the message to leave the broker",
        )
        assert redis_client.llen("files") == 0
        # Reported as rejected (Flower, metrics), not as a success.
        assert "reject requeue=False" in worker.output()
        assert f"files.thumbnail[{task_id}] succeeded" not in worker.output()

        # Recorded, not only logged: a dead row of its own (it came from no
        # outbox row), with its task, arguments and reason.
        dead = outbox_row(db, task_id)
        assert (dead["task_name"], dead["args"]) == ("files.thumbnail", [file_id])
        assert dead["dead_reason"] == (
            f"poison: files.thumbnail[{task_id}] dropped: delivered"
            f" {limits.MAX_DELIVERIES} times without finishing"
        )
        shown = veza("outbox")
        assert "dead: 1" in shown.stdout
        assert task_id in shown.stdout

        # Whatever killed the worker is fixed (here: nobody kills it now).
        assert veza("outbox", "replay", task_id).returncode == 0
        wait_for(
            lambda: outbox_row(db, task_id)["finished_at"],
            timeout=60,
            what="the replayed message to run to the end",
        )
        assert received(worker, task_id) == limits.MAX_DELIVERIES + 1
        assert db.execute(
            "SELECT processing_status::text FROM files WHERE id = %s", (file_id,)
        ).fetchone() == ("completed",)
    finally:
        worker.stop()
