"""The Prometheus exporter, against real Redis, PostgreSQL and workers."""

from __future__ import annotations

import sys
import urllib.request

import pytest
from kombu import Connection, Exchange, Queue
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ManagedProcess, wait_for
from tests.processes import free_port
from veza import jobs


def test_queue_depth_counts_every_priority_list(redis_client):
    import os

    from worker.metrics import queue_depth

    queue = Queue("veza-test-depth", Exchange("veza-test-depth"), "veza-test-depth", max_priority=9)
    with Connection(os.environ["REDIS_URL"]) as conn:
        producer = conn.Producer()
        for priority in (0, 0, 3, 9, 9):
            producer.publish(
                {"n": priority},
                exchange=queue.exchange,
                routing_key="veza-test-depth",
                declare=[queue],
                priority=priority,
            )
    assert queue_depth(redis_client, "veza-test-depth") == 5


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


@pytest.mark.slow
def test_exporter_reports_queues_outbox_heartbeat_and_task_outcomes(db, celery_worker, relay):
    from db.engine import session_scope
    from veza.outbox import enqueue

    port = free_port()
    exporter = ManagedProcess(
        "exporter", [sys.executable, "-m", "worker.cli", "exporter", "--port", str(port)]
    ).start()
    try:
        wait_for(lambda: _answers(port), what="exporter to listen")

        def heartbeat_counted() -> bool:
            # The exporter joins the event stream a moment after it listens:
            # keep sending heartbeats until three are counted.
            with session_scope() as session:
                enqueue(session, jobs.HEARTBEAT)
            runs = sample(
                scrape(port), "veza_task_runs_total", task="system.heartbeat", outcome="succeeded"
            )
            return (runs or 0) >= 3

        wait_for(heartbeat_counted, timeout=60, interval=0.5, what="three heartbeats counted")
        db.execute(
            "INSERT INTO outbox (task_name, sent_at, dead_at, dead_reason)"
            " VALUES ('files.process', now(), now(), 'poison: a test')"
        )
        text = scrape(port)
        for queue in ("default", "files", "scan", "maintenance"):
            assert sample(text, "veza_queue_depth", queue=queue) is not None
        assert sample(text, "veza_outbox_backlog") == 0
        assert sample(text, "veza_outbox_dead") == 1
        assert 0 <= sample(text, "veza_worker_heartbeat_age_seconds") < 60
        assert sample(text, "veza_task_duration_seconds_count", task="system.heartbeat") >= 3
        assert sample(text, "veza_exporter_up", source="redis") == 1
        assert sample(text, "veza_exporter_up", source="postgres") == 1
    finally:
        exporter.stop()


def test_exporter_serves_queue_depth_while_the_database_is_down(redis_client):
    """A PostgreSQL outage is exactly when queue depth matters: the scrape
    must not fail as a whole, and must say which source is down."""
    port = free_port()
    unreachable = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/veza"
    exporter = ManagedProcess(
        "exporter-nodb",
        [sys.executable, "-m", "worker.cli", "exporter", "--port", str(port)],
        env={"DATABASE_URL": unreachable},
    ).start()
    try:
        wait_for(lambda: _answers(port), what="exporter to listen")
        text = scrape(port)
    finally:
        exporter.stop()
    assert sample(text, "veza_queue_depth", queue="default") is not None
    assert sample(text, "veza_worker_heartbeat_age_seconds") is not None
    assert sample(text, "veza_outbox_backlog") is None
    assert sample(text, "veza_exporter_up", source="postgres") == 0
    assert sample(text, "veza_exporter_up", source="redis") == 1


def _answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


def start_exporter(name: str = "exporter") -> tuple[ManagedProcess, int]:
    port = free_port()
    exporter = ManagedProcess(
        name, [sys.executable, "-m", "worker.cli", "exporter", "--port", str(port)]
    ).start()
    wait_for(lambda: _answers(port), what="exporter to listen")
    return exporter, port


def runs_counted(text: str) -> str | None:
    failed = {"task": "maintenance.rescan_files", "outcome": "failed"}
    return text if sample(text, "veza_maintenance_runs_total", **failed) else None


def test_every_failure_series_is_there_at_0_on_an_empty_database_then_moves(db, redis_client):
    """What an alert reads must exist before the first failure (a rate()
    over no series is no data, not 0), and must follow the tables: files by
    terminal state, maintenance runs by outcome, last successes, re-drives,
    and every task's outcomes."""
    from tests.factories import make_user
    from tests.test_alerts import metric_names_in_rules
    from tests.uploads import upload
    from veza.maintenance.outcomes import OUTCOMES
    from worker import app
    from worker.metrics import registered_tasks

    maintenance = [t for t in registered_tasks(app) if t.startswith("maintenance.")]
    exporter, port = start_exporter()
    try:
        empty = scrape(port)
        user = make_user(db)
        for processing, scan, reason in (
            ("completed", "clean", None),
            ("failed", "infected", "infected: Eicar-Signature"),
            ("failed", "failed", "unscannable: encrypted content"),
            ("failed", "pending", "size mismatch"),
            ("failed", "clean", "image too large"),  # a bad image after a clean scan
        ):
            db.execute(
                "UPDATE files SET processing_status = %s, virus_scan_status = %s,"
                " metadata = metadata || jsonb_build_object('failure_reason', %s::text)"
                " WHERE id = %s",
                (processing, scan, reason, upload(db, user, b"content")),
            )
        db.execute(
            "INSERT INTO maintenance_runs (task_name, status, dry_run, counts, finished_at) VALUES"
            " ('maintenance.redrive_outbox', 'succeeded', false, '{\"outbox_redriven\": 3}', now()),"
            " ('maintenance.redrive_outbox', 'dry_run', true, '{\"outbox_redriven\": 5}', now()),"
            " ('maintenance.requeue_stale_files', 'cancelled', false, '{\"stale_requeued\": 2}', now()),"
            " ('maintenance.rescan_files', 'failed', false, '{}', now())"
        )
        # Runs are counted once they have settled (RunTotals.SETTLE_SECONDS).
        moved = wait_for(
            lambda: runs_counted(scrape(port)), timeout=60, interval=1, what="runs counted"
        )
    finally:
        exporter.stop()

    for name in metric_names_in_rules():  # the alert rules read only what is exported
        assert name in empty, name
    for state in ("clean", "infected", "failed", "unscannable"):
        assert sample(empty, "veza_files", state=state) == 0
    for task in maintenance:
        for outcome in OUTCOMES:
            assert sample(empty, "veza_maintenance_runs_total", task=task, outcome=outcome) == 0
        assert sample(empty, "veza_maintenance_last_success_timestamp_seconds", task=task) == 0
    for kind in ("outbox", "stale_file", "failed_file"):
        assert sample(empty, "veza_redrives_total", kind=kind) == 0
    for task in registered_tasks(app):
        for outcome in ("succeeded", "failed", "rejected"):
            assert sample(empty, "veza_task_runs_total", task=task, outcome=outcome) == 0
    assert sample(empty, "veza_outbox_dead") == 0

    assert {
        s: sample(moved, "veza_files", state=s)
        for s in ("clean", "infected", "unscannable", "failed")
    } == {
        "clean": 1,
        "infected": 1,
        "unscannable": 1,
        "failed": 2,
    }
    runs = "veza_maintenance_runs_total"
    assert sample(moved, runs, task="maintenance.rescan_files", outcome="failed") == 1
    assert sample(moved, runs, task="maintenance.redrive_outbox", outcome="succeeded") == 1
    assert sample(moved, runs, task="maintenance.redrive_outbox", outcome="dry_run") == 1
    assert sample(moved, runs, task="maintenance.requeue_stale_files", outcome="cancelled") == 1
    last = "veza_maintenance_last_success_timestamp_seconds"
    assert sample(moved, last, task="maintenance.redrive_outbox") > 0
    assert sample(moved, last, task="maintenance.rescan_files") == 0
    # A dry run sent nothing again; a cancelled run's batches did.
    assert sample(moved, "veza_redrives_total", kind="outbox") == 3
    assert sample(moved, "veza_redrives_total", kind="stale_file") == 2


def test_each_finished_maintenance_run_is_counted_once_across_scrapes(db):
    """The exporter adds the runs that finished since its last scrape (a
    scrape must not read every run there ever was): none twice, none
    missed, a running one once it ends."""
    from db.engine import session_scope
    from worker.metrics import RunTotals

    task = "maintenance.rescan_files"
    totals = RunTotals([task])
    totals.SETTLE_SECONDS = 0  # these rows commit at once

    def failed_runs() -> int:
        with session_scope() as session:
            return totals.update(session)[(task, "failed")]

    def add_run(status: str) -> int:
        return db.execute(
            "INSERT INTO maintenance_runs (task_name, status, finished_at) VALUES"
            " (%s, %s, CASE WHEN %s <> 'running' THEN now() END) RETURNING id",
            (task, status, status),
        ).fetchone()[0]

    add_run("failed")
    seen = [failed_runs(), failed_runs()]
    running = add_run("running")
    seen.append(failed_runs())
    db.execute(
        "UPDATE maintenance_runs SET status = 'failed', finished_at = now() WHERE id = %s",
        (running,),
    )
    seen += [failed_runs(), failed_runs()]
    assert seen == [1, 1, 1, 2, 2]
