"""The rules every maintenance run shares (veza/maintenance/run.py), on a
body of the test's own so that the batches are countable: live progress in
the run's row, cancelling at a batch boundary, dry runs recorded as such."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import wait_for
from tests.processes import veza

NAME = "maintenance.test_probe"


@pytest.fixture
def probe(db):
    """A table for the probe's batches, dropped afterwards: the schema test
    compares the database with the models."""
    db.execute("CREATE TABLE run_probe (n integer)")
    yield db
    db.execute("DROP TABLE run_probe")


def probe_body(batches: int):
    """A body of `batches` batches, each one committed insert into the
    probe table, expecting them all: what a purge's batch loop does,
    countably."""
    from sqlalchemy import text

    from db.engine import session_scope

    def body(run) -> None:
        with run.phase("probing", left=1):
            run.expect(batches, of="batches")
            for n, _ in enumerate(run.batches()):
                with session_scope() as session:
                    session.execute(text("INSERT INTO run_probe VALUES (:n)"), {"n": n})
                run.add(batches=1)
                if n + 1 == batches:
                    return

    return body


def run_row(db, run_id: int) -> dict:
    cursor = db.execute(
        "SELECT status, phase, progress, counts, error, cancel_requested_by"
        " FROM maintenance_runs WHERE id = %s",
        (run_id,),
    )
    names = [c.name for c in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def latest_run_id(db) -> int | None:
    row = db.execute(
        "SELECT max(id) FROM maintenance_runs WHERE task_name = %s", (NAME,)
    ).fetchone()
    return row[0]


def test_a_cancelled_run_stops_at_a_batch_boundary_with_its_progress_kept(probe):
    db = probe
    from veza.maintenance.run import run_exclusively

    outcome: dict = {}
    body = probe_body(batches=1_000_000)
    worker = threading.Thread(
        target=lambda: outcome.update(run_exclusively(NAME, body, False, {})), daemon=True
    )
    worker.start()
    try:
        wait_for(lambda: latest_run_id(db) is not None, what="the run's row")
        run_id = latest_run_id(db)
        # Live progress is in the row while the run goes on.
        wait_for(
            lambda: (run_row(db, run_id)["progress"] or {}).get("done", 0) > 0,
            what="progress with a count done",
        )
        live = run_row(db, run_id)
        assert live["status"] == "running"
        assert live["phase"] == "probing"
        assert live["progress"]["total"] == 1_000_000

        asked = veza("maintenance", "cancel", str(run_id), "--operator", "alice")
        assert asked.returncode == 0, asked.stderr
    finally:
        worker.join(timeout=30)
    assert not worker.is_alive(), "the run did not stop after the cancel request"

    row = run_row(db, run_id)
    assert outcome["status"] == row["status"] == "cancelled"
    assert row["error"] == "cancelled by alice"
    assert row["cancel_requested_by"] == "alice"
    # It stopped between batches: every batch it counted is committed, and
    # nothing it did not count.
    committed = db.execute("SELECT count(*) FROM run_probe").fetchone()[0]
    assert committed == row["counts"]["batches"] == outcome["counts"]["batches"] > 0
    audited = db.execute(
        "SELECT event_type, event_data->>'operator', event_data->>'status' FROM audit_logs"
        " WHERE resource_type = 'maintenance_run' AND resource_id = %s ORDER BY id",
        (run_id,),
    ).fetchall()
    assert audited == [
        ("maintenance.cancel_requested", "alice", None),
        (NAME, None, "cancelled"),
    ]

    # Asking again, now that it is over, is refused and audited nowhere.
    again = veza("maintenance", "cancel", str(run_id))
    assert again.returncode == 1
    assert "is not running" in again.stderr
    assert db.execute(
        "SELECT count(*) FROM audit_logs WHERE event_type = 'maintenance.cancel_requested'"
    ).fetchone() == (1,)


def test_a_dry_run_is_recorded_as_a_dry_run_and_a_real_one_as_a_success(probe):
    db = probe
    from veza.maintenance.run import run_exclusively

    dry = run_exclusively(NAME, probe_body(batches=3), True, {})
    real = run_exclusively(NAME, probe_body(batches=3), False, {})

    assert (dry["status"], dry["dry_run"]) == ("dry_run", True)
    assert (real["status"], real["dry_run"]) == ("succeeded", False)
    statuses = db.execute(
        "SELECT status, dry_run, progress->>'done' FROM maintenance_runs"
        " WHERE task_name = %s ORDER BY id",
        (NAME,),
    ).fetchall()
    assert statuses == [("dry_run", True, "3"), ("succeeded", False, "3")]
