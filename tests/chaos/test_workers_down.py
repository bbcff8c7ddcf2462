"""Chaos: every file worker down for longer than the stuck-file threshold
while uploads wait. A backlog is not a failure: the stuck-file job waits for
the owed work to start instead of requeueing (or failing) it, and once the
workers are back every upload completes."""

from __future__ import annotations

import io

import pytest

from tests.conftest import purge_queues, start_worker, wait_for
from tests.maintenance_helpers import run_task

pytestmark = pytest.mark.slow

UPLOADS = 20
QUEUES = "files,scan"
# The threshold of this test, in seconds (STALE_FILE_MINUTES is 30 by default).
STALE_SECONDS = 1


def quiet_for_longer_than_the_threshold(db) -> bool:
    """Every file has been waiting, since its upload or its latest requeue,
    for longer than the threshold: the old age rule would requeue it now."""
    return db.execute(
        "SELECT bool_and(GREATEST(created_at, (metadata->>'requeued_at')::timestamptz)"
        " < now() - make_interval(secs => %s)) FROM files",
        (STALE_SECONDS,),
    ).fetchone()[0]


def test_uploads_waiting_out_a_worker_outage_are_neither_requeued_nor_failed(
    api, db, relay, clamd_server
):
    purge_queues(QUEUES)  # no worker is on them: the outage starts now
    alice = api.register()
    room = api.room(alice)
    for i in range(UPLOADS):
        response = api.post(
            f"/rooms/{room}/files",
            alice,
            content_type="multipart/form-data",
            data={
                "file": (
                    io.BytesIO(f"minutes {i}\n".encode() * 40),
                    f"minutes{i}.txt",
                    "text/plain",
                )
            },
        )
        assert response.status_code == 202
    wait_for(
        lambda: (
            db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").fetchone()[0]
            == UPLOADS
        ),
        what="the relay to publish every upload",
    )

    # More runs than MAX_FILE_ATTEMPTS (3), each past the threshold: by age
    # alone, every file would have been requeued each time, then failed.
    for _ in range(5):
        wait_for(lambda: quiet_for_longer_than_the_threshold(db), what="the threshold to pass")
        counts = run_task("maintenance.requeue_stale_files", stale_seconds=STALE_SECONDS)["counts"]
        assert counts == {"stale_waiting": UPLOADS}
        assert db.execute(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM outbox"
            " WHERE started_at IS NULL GROUP BY args) owed"
        ).fetchone() == (1,)

    worker = start_worker("after-outage", queues=QUEUES, purge=False)  # takes over the backlog
    try:
        wait_for(
            lambda: db.execute(
                "SELECT bool_and(processing_status IN ('completed', 'failed')) FROM files"
            ).fetchone()[0],
            timeout=120,
            interval=0.5,
            what=f"all {UPLOADS} files to finish",
        )
    finally:
        worker.stop()

    states = db.execute(
        "SELECT processing_status::text, virus_scan_status::text,"
        " metadata ? 'failed_step' FROM files"
    ).fetchall()
    assert states == [("completed", "clean", False)] * UPLOADS
    # Each upload's one owed files.process ran; no requeue was ever added.
    assert db.execute("SELECT count(*), count(started_at) FROM outbox").fetchone() == (
        UPLOADS,
        UPLOADS,
    )
