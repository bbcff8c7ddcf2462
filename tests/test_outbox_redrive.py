"""Owed work is done, eventually: an outbox row is finished when the last
task of its work returns (for a chain, its last link), a row that never
finishes is re-driven and then recorded dead with its reason, and
`veza outbox replay` sends a dead row again. A real relay, workers,
PostgreSQL, Redis and clamd; the reconciler runs as an operator would run
it, `veza maintenance run redrive_outbox`."""

from __future__ import annotations

import uuid

import pytest

from tests.clamav import EICAR
from tests.conftest import start_worker, wait_for
from tests.factories import make_user, outbox_row
from tests.processes import veza
from tests.uploads import encoded, gradient, row, upload
from veza import jobs
from veza.jobs import Job


def owe(job: Job, *args) -> uuid.UUID:
    from db.engine import session_scope
    from veza.outbox import enqueue

    with session_scope() as session:
        return enqueue(session, job, *args)


@pytest.mark.slow
def test_a_file_pipelines_row_is_finished_by_its_last_link_not_by_its_root(
    db, clamd_server, relay, redis_client
):
    user = make_user(db)
    clean = upload(db, user, encoded(gradient(64, 48), "PNG"), "a.png", "image/png")
    infected = upload(db, user, EICAR, "eicar.com", "application/octet-stream")
    rows = {file_id: owe(jobs.PROCESS_FILE, file_id) for file_id in (clean, infected)}
    # No worker takes `scan` yet: each root runs, hands its chain on, and returns.
    files_only = start_worker("files-only", queues="files", concurrency=1)
    try:
        for row_id in rows.values():
            wait_for(
                lambda row_id=row_id: f"files.process[{row_id}] succeeded" in files_only.output(),
                timeout=60,
                what="files.process to return",
            )
            assert outbox_row(db, row_id)["started_at"] is not None
            assert outbox_row(db, row_id)["finished_at"] is None, "the chain has not run yet"
        scanner = start_worker("scan-only", queues="scan", concurrency=1, purge=False)
        try:
            for row_id in rows.values():
                wait_for(
                    lambda row_id=row_id: outbox_row(db, row_id)["finished_at"],
                    timeout=90,
                    what="the last link to finish the row",
                )
        finally:
            scanner.stop()
    finally:
        files_only.stop()
    # Finished means the pipeline's end, a recorded failure state included.
    assert row(db, clean)["processing_status"] == "completed"
    assert (row(db, infected)["processing_status"], row(db, infected)["virus_scan_status"]) == (
        "failed",
        "infected",
    )


BROKEN_DEPLOY = """
CREATE FUNCTION refuse_user_updates() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'users is read-only during the migration'; END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_user_updates BEFORE UPDATE ON users FOR EACH ROW
    EXECUTE FUNCTION refuse_user_updates();
"""
FIXED_DEPLOY = "DROP TRIGGER refuse_user_updates ON users; DROP FUNCTION refuse_user_updates();"


@pytest.mark.slow
def test_a_row_that_never_finishes_is_redriven_then_dead_and_a_replay_runs_it(
    api, db, celery_worker, relay
):
    settings = {"OUTBOX_REDRIVE_AFTER_SECONDS": "1", "OUTBOX_MAX_REDRIVES": "2"}
    alice = api.register()
    room = api.room(alice)
    # messages.index fails for good (not a transient error) on every run.
    db.execute(BROKEN_DEPLOY)
    try:
        message = api.say(room, alice, "indexed only after the replay")
        row_id = db.execute(
            "SELECT id FROM outbox WHERE args = %s::jsonb", (f"[{message['id']}]",)
        ).fetchone()[0]
        wait_for(
            lambda: outbox_row(db, row_id)["last_error"],
            timeout=60,
            what="the task's failure to be recorded",
        )

        def reconciled_until_dead():
            ran = veza("maintenance", "run", "redrive_outbox", **settings)
            assert ran.returncode == 0, ran.stderr
            return outbox_row(db, row_id)["dead_at"]

        wait_for(reconciled_until_dead, timeout=120, interval=0.5, what="the row to end dead")
        dead = outbox_row(db, row_id)
        assert dead["redrives"] == 2
        assert dead["finished_at"] is None
        assert dead["dead_reason"].startswith("never finished after 2 re-drives; last error:")
        assert "messages.index" in dead["dead_reason"]
        assert "read-only during the migration" in dead["dead_reason"]
        # Sent again each time under the same task id.
        wait_for(
            lambda: celery_worker.output().count(f"messages.index[{row_id}] received") == 3,
            what="three deliveries of the one task id",
        )
        # Dead is final: the reconciler leaves it alone.
        assert veza("maintenance", "run", "redrive_outbox", **settings).returncode == 0
        assert outbox_row(db, row_id)["redrives"] == 2

        shown = veza("outbox")
        assert shown.returncode == 0, shown.stderr
        assert "dead: 1" in shown.stdout
        assert str(row_id) in shown.stdout
        assert "read-only during the migration" in shown.stdout
    finally:
        db.execute(FIXED_DEPLOY)
    member = "SELECT message_count FROM room_members WHERE room_id = %s AND user_id = %s"
    assert db.execute(member, (room, alice.id)).fetchone() == (0,)

    replayed = veza("outbox", "replay", str(row_id))
    assert replayed.returncode == 0, replayed.stderr
    wait_for(
        lambda: outbox_row(db, row_id)["finished_at"], timeout=60, what="the replayed row to finish"
    )
    assert db.execute(member, (room, alice.id)).fetchone() == (1,)
    replayed_row = outbox_row(db, row_id)
    assert (replayed_row["dead_at"], replayed_row["redrives"]) == (None, 0)
    assert "dead: 0" in veza("outbox").stdout
    audit = db.execute(
        "SELECT event_data FROM audit_logs WHERE event_type = 'outbox.replay'"
    ).fetchone()[0]
    assert audit["rows"][0]["id"] == str(row_id)
    assert "read-only" in audit["rows"][0]["dead_reason"]


def test_replay_refuses_a_row_that_is_not_dead(db):
    alive = owe(jobs.HEARTBEAT)
    refused = veza("outbox", "replay", str(alive), str(uuid.uuid4()))
    assert refused.returncode == 1
    assert str(alive) in refused.stderr
    assert outbox_row(db, alive)["sent_at"] is None
    assert outbox_row(db, alive)["redrives"] == 0


def test_replay_all_dead_sends_every_dead_row_again(db):
    ids = [owe(jobs.HEARTBEAT) for _ in range(3)]
    db.execute(
        "UPDATE outbox SET sent_at = now(), dead_at = now(), dead_reason = 'test',"
        " redrives = 5 WHERE id = ANY(%s)",
        (ids[:2],),
    )
    replayed = veza("outbox", "replay", "--all-dead")
    assert replayed.returncode == 0, replayed.stderr
    assert db.execute(
        "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL AND redrives = 0"
    ).fetchone() == (3,)
    assert [outbox_row(db, i)["dead_reason"] for i in ids] == ["test", "test", None]


def test_a_relays_claim_keeps_other_relays_off_its_batch_until_it_expires(db):
    from db.engine import get_engine
    from worker.relay import claim

    ids = {owe(jobs.HEARTBEAT) for _ in range(3)}
    with get_engine().connect() as first, get_engine().connect() as second:
        assert {row.id for row in claim(first)} == ids
        assert claim(second) == [], "a second relay must not publish a claimed batch"
        # The first relay died holding its claim: once the claim runs out,
        # the rows are claimed again.
        db.execute("UPDATE outbox SET claimed_until = now() - interval '1 second'")
        assert {row.id for row in claim(second)} == ids
    assert db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone() == (3,)


def test_a_poison_link_of_a_chain_makes_its_outbox_row_dead(db):
    """The base class records a dropped message on its root's row, so that a
    replay runs the whole (idempotent) chain again from its root."""
    from veza.outbox import record_dead

    root = owe(jobs.PROCESS_FILE, 7)
    db.execute("UPDATE outbox SET sent_at = now(), started_at = now() WHERE id = %s", (root,))
    link = str(uuid.uuid4())
    record_dead(str(root), link, "files.thumbnail", [7], {}, "poison: files.thumbnail dropped")
    dead = outbox_row(db, root)
    assert (dead["task_name"], dead["dead_reason"]) == (
        "files.process",
        "poison: files.thumbnail dropped",
    )
    assert dead["dead_at"] is not None
    assert dead["finished_at"] is None
    assert outbox_row(db, link) == {}, "no row of its own for a link of an outbox row's work"
