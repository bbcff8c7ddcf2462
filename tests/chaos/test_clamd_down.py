"""The file pipeline through real Celery workers (files and scan queues),
with clamd stopped in the middle of the run."""

from __future__ import annotations

import pytest

from tests.clamav import EICAR
from tests.conftest import start_worker, wait_for
from tests.factories import make_user
from tests.uploads import encoded, gradient, row, upload

pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline_worker(database_url, redis_client, clamd_server):
    # Short backoff so the retries happen within the test.
    proc = start_worker("files", queues="files,scan", env={"CLAMD_RETRY_BACKOFF": "0.5"})
    yield proc
    proc.stop()


def statuses(db, file_ids: list[int]) -> list[tuple]:
    return db.execute(
        "SELECT id, virus_scan_status::text, processing_status::text, virus_scan_result"
        " FROM files WHERE id = ANY(%s) ORDER BY id",
        (file_ids,),
    ).fetchall()


def test_with_clamd_down_no_file_is_clean_and_all_finish_once_it_is_back(
    db, clamd_server, pipeline_worker
):
    from worker import app

    user = make_user(db)
    picture = upload(db, user, encoded(gradient(640, 480), "JPEG"), "p.jpg", "image/jpeg")
    text = upload(db, user, b"meeting notes", "notes.txt", "text/plain")
    virus = upload(db, user, EICAR, "virus.txt", "text/plain")
    file_ids = [picture, text, virus]

    clamd_server.stop()
    try:
        for file_id in [*file_ids, virus]:  # the virus twice: a duplicate delivery
            app.send_task("files.process", args=[file_id])

        def all_waiting_for_clamd():
            rows = statuses(db, file_ids)
            assert not [r for r in rows if r[1] in ("clean", "infected")], rows
            return all(
                r[1] == "scanning" and r[3] == "the virus scanner is unavailable; retrying"
                for r in rows
            )

        wait_for(all_waiting_for_clamd, timeout=60, what="every scan to find clamd down")
    finally:
        clamd_server.start()

    wait_for(
        lambda: all(r[2] != "processing" for r in statuses(db, file_ids)),
        timeout=90,
        interval=0.3,
        what="every file to finish",
    )
    assert [r[1:3] for r in statuses(db, file_ids)] == [
        ("clean", "completed"),
        ("clean", "completed"),
        ("infected", "failed"),
    ]
    assert row(db, picture)["thumbnail_path"] is not None
    assert row(db, virus)["file_path"].startswith("quarantine/")
    critical = db.execute("SELECT count(*) FROM audit_logs WHERE severity = 'critical'")
    assert critical.fetchone() == (1,)  # one, although the virus was processed twice
    assert pipeline_worker.proc.poll() is None  # no crash on the way
