"""Celery configuration and a task through a real worker on a real Redis."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_for
from tests.processes import veza
from veza import jobs


def test_production_settings():
    from veza import limits
    from worker import app

    app.loader.import_default_modules()
    conf = app.conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late
    assert conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_connection_retry_on_startup is True
    assert {q.name for q in conf.task_queues} >= {"files", "scan", "maintenance"}
    assert conf.task_ignore_result
    assert conf.result_expires
    # Redelivery must not overtake a task still running or waiting to retry.
    hard_limits = [
        t.time_limit or conf.task_time_limit
        for t in app.tasks.values()
        if not t.name.startswith("celery.")
    ]
    assert (
        conf.broker_transport_options["visibility_timeout"]
        > max(hard_limits) + limits.RETRY_BACKOFF_MAX
    )
    # A hung Redis fails a command instead of hanging it (tests/chaos/test_redis_hung.py);
    # a read must still outwait kombu's 1 s BRPOP.
    for option in ("socket_timeout", "socket_connect_timeout"):
        assert conf.broker_transport_options[option] > 1
    assert conf.redis_socket_timeout
    assert conf.redis_socket_connect_timeout


def test_every_task_has_soft_and_hard_time_limits_and_an_explicit_queue():
    from worker import app
    from worker.celery_app import QUEUES

    app.loader.import_default_modules()
    ours = [t for name, t in app.tasks.items() if not name.startswith("celery.")]
    assert ours
    for task in ours:
        soft = task.soft_time_limit or app.conf.task_soft_time_limit
        hard = task.time_limit or app.conf.task_time_limit
        assert soft, task.name
        assert hard, task.name
        assert soft < hard, task.name
        route = app.conf.task_routes
        assert any(
            task.name == pattern or (pattern.endswith("*") and task.name.startswith(pattern[:-1]))
            for pattern in route
        ), f"{task.name} has no explicit route"
        assert app.amqp.router.route({}, task.name)["queue"].name in QUEUES


@pytest.mark.slow
def test_outbox_work_runs_on_a_real_worker(db, redis_client, celery_worker, relay):
    from db.engine import session_scope
    from veza.outbox import enqueue
    from veza.redis_store import HEARTBEAT_KEY

    redis_client.delete(HEARTBEAT_KEY)
    before = time.time()
    with session_scope() as session:
        task_id = enqueue(session, jobs.HEARTBEAT)

    stamp = wait_for(lambda: redis_client.get(HEARTBEAT_KEY), timeout=30, what="heartbeat")
    assert float(stamp) >= before
    # The relay marks a row sent after publishing it, so a quick worker may
    # start it first: the row's life is created, started, finished, and sent.
    created_at, started_at, finished_at = wait_for(
        lambda: db.execute(
            "SELECT created_at, started_at, finished_at FROM outbox WHERE id = %s"
            " AND sent_at IS NOT NULL AND finished_at IS NOT NULL",
            (task_id,),
        ).fetchone(),
        what="outbox row sent and finished",
    )
    assert created_at <= started_at <= finished_at


def test_a_rolled_back_write_enqueues_nothing(db):
    from db.engine import session_scope
    from veza.outbox import enqueue

    class Abort(Exception):
        pass

    try:
        with session_scope() as session:
            enqueue(session, jobs.HEARTBEAT)
            raise Abort
    except Abort:
        pass
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


@pytest.mark.slow
def test_the_relay_lives_on_after_an_unexpected_error(db, redis_client, celery_worker, relay):
    """Not only outages: any error (here a missing table, a ProgrammingError)
    is logged and retried; the relay must not exit and strand the outbox."""
    from db.engine import session_scope
    from veza.outbox import enqueue

    wait_for(lambda: "listening" in relay.output(), what="the relay to start")
    db.execute("ALTER TABLE outbox RENAME TO outbox_away")
    try:
        wait_for(lambda: "UndefinedTable" in relay.output(), what="the relay to hit the error")
    finally:
        db.execute("ALTER TABLE outbox_away RENAME TO outbox")
    assert relay.proc.poll() is None, relay.output()
    with session_scope() as session:
        task_id = enqueue(session, jobs.HEARTBEAT)
    wait_for(
        lambda: db.execute("SELECT sent_at FROM outbox WHERE id = %s", (task_id,)).fetchone()[0],
        what="the relay to publish after the error",
    )


def test_veza_outbox_fails_the_healthcheck_when_the_oldest_unsent_row_is_stale(db):
    db.execute(
        "INSERT INTO outbox (id, task_name, args, kwargs, created_at)"
        " VALUES (gen_random_uuid(), 'system.heartbeat', '[]', '{}', now() - interval '5 minutes')"
    )

    stale = veza("outbox")
    assert stale.returncode == 1
    assert "unsent: 1" in stale.stdout
    assert "stale" in stale.stderr
    assert veza("outbox", OUTBOX_STALE_SECONDS="600").returncode == 0
