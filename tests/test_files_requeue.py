"""The operator's re-queue of failed files (maintenance.requeue_failed_files)."""

from __future__ import annotations

from tests.clamav import EICAR
from tests.factories import make_user
from tests.maintenance_helpers import run_task
from tests.uploads import encoded, gradient, row, upload
from veza import jobs


def test_failed_files_go_through_again_and_infected_ones_stay_put(db, clamd_server):
    from veza.files import pipeline

    user = make_user(db)
    picture = upload(db, user, encoded(gradient(64, 48), "PNG"), "p.png", "image/png")
    virus = upload(db, user, EICAR, "virus.txt", "text/plain")
    for file_id in (picture, virus):
        pipeline.hash_upload(file_id)
        pipeline.sniff(file_id)
    # clamd was down through every retry of the picture's scan.
    pipeline.scan_unavailable(picture, "clamd unreachable", final=True)
    pipeline.run_all(virus)
    assert (row(db, picture)["processing_status"], row(db, picture)["virus_scan_status"]) == (
        "failed",
        "failed",
    )
    assert row(db, virus)["virus_scan_status"] == "infected"

    dry = run_task("maintenance.requeue_failed_files", dry_run=True)
    assert dry["counts"] == {"failed_requeued": 1}
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)

    run_task("maintenance.requeue_failed_files")
    owed = db.execute("SELECT task_name, args FROM outbox").fetchall()
    assert owed == [("files.process", [picture])]
    assert row(db, picture)["virus_scan_status"] == "pending"

    pipeline.run_all(picture)  # what the owed task does, with clamd back
    done = row(db, picture)
    assert (done["processing_status"], done["virus_scan_status"]) == ("completed", "clean")
    assert row(db, virus)["virus_scan_status"] == "infected"


def test_a_file_whose_content_was_lost_fails_again_when_requeued_never_completes(db, clamd_server):
    from veza.files import pipeline
    from veza.storage import get_storage

    storage = get_storage()

    user = make_user(db)
    file_id = upload(db, user, b"minutes of the meeting", "minutes.txt", "text/plain")
    pipeline.run_all(file_id)
    assert row(db, file_id)["processing_status"] == "completed"
    storage.remove(row(db, file_id)["file_path"])  # the disk lost it
    # Past the orphan grace (1 h), within an unattached upload's TTL (24 h).
    db.execute("UPDATE files SET created_at = now() - interval '2 hours' WHERE id = %s", (file_id,))

    run_task("maintenance.purge_expired_files")
    lost = row(db, file_id)
    assert lost["processing_status"] == "failed"
    assert lost["metadata"]["failed_step"] == "storage"
    assert "missing" in lost["metadata"]["failure_reason"]

    run_task("maintenance.requeue_failed_files")
    pipeline.run_all(file_id)  # what the owed files.process does
    again = row(db, file_id)
    assert again["processing_status"] == "failed"
    assert "missing" in again["metadata"]["failure_reason"]


def test_a_file_whose_work_started_and_stalled_is_requeued_and_stuck_is_not_final(db, clamd_server):
    from db.engine import session_scope
    from veza import outbox
    from veza.files import pipeline
    from veza.files.owed import owe
    from veza.settings import get_settings

    user = make_user(db)
    file_id = upload(db, user, b"agenda of the meeting", "agenda.txt", "text/plain")
    with session_scope() as session:
        owe(session, jobs.PROCESS_FILE, file_id)  # as the upload does

    def requeue_stale() -> dict:
        # Any quiet time is "too long" here: only whether the work started decides.
        return run_task("maintenance.requeue_stale_files", stale_seconds=0)["counts"]

    def latest_owed() -> str:
        return row(db, file_id)["metadata"]["outbox_id"]

    assert requeue_stale() == {"stale_waiting": 1}  # not started yet: waits
    for attempt in range(1, get_settings().max_file_attempts + 1):
        stalled = latest_owed()
        outbox.mark_started([stalled])  # a worker took it...
        pipeline.hash_upload(file_id)  # ...got this far, and died
        assert requeue_stale() == {"stale_requeued": 1}
        assert latest_owed() != stalled
        assert row(db, file_id)["metadata"]["requeue_attempts"] == attempt
        assert requeue_stale() == {"stale_waiting": 1}  # the requeue has not started
    assert db.execute(
        "SELECT count(*) FILTER (WHERE started_at IS NULL), count(*) FROM outbox"
    ).fetchone() == (1, 1 + get_settings().max_file_attempts)

    outbox.mark_started([latest_owed()])
    assert requeue_stale() == {"stale_failed": 1}
    stuck = row(db, file_id)
    assert stuck["processing_status"] == "failed"
    assert not stuck["is_processed"]
    assert stuck["metadata"]["failed_step"] == "stuck"
    assert "failure_reason" not in stuck["metadata"]

    pipeline.run_all(file_id)  # a late run of its pipeline (or requeue_failed_files)
    done = row(db, file_id)
    assert (done["processing_status"], done["virus_scan_status"]) == ("completed", "clean")
    assert "failed_step" not in done["metadata"]
    assert "error" not in done["metadata"]
