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
