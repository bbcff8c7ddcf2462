"""The transactional outbox.

A write and the work it causes commit together: `enqueue` adds an outbox row
in the caller's transaction, and the relay publishes committed rows to
Celery, using the row's id as the task id. A rolled-back write leaves no row,
so it enqueues nothing; a committed one stays until published, so Redis
being down delays work but never loses it.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import psycopg
from celery import Celery
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.engine import libpq_url, session_scope
from db.models import Outbox
from worker.config import env_int

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "veza_outbox"
BATCH_SIZE = 200
IDLE_POLL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 10.0
# Publishing gives up quickly: the relay has its own backoff, and a row that
# is not marked sent is simply tried again.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}


def enqueue(
    session: Session,
    task_name: str,
    *args: Any,
    queue: str | None = None,
    request_id: uuid.UUID | None = None,
    **kwargs: Any,
) -> uuid.UUID:
    """Owe `task_name(*args, **kwargs)`, in the caller's transaction."""
    row = Outbox(
        id=uuid.uuid4(),
        task_name=task_name,
        args=list(args),
        kwargs=kwargs,
        queue=queue,
        request_id=request_id,
    )
    session.add(row)
    return row.id


def publish_pending(app: Celery, batch_size: int = BATCH_SIZE) -> tuple[int, Exception | None]:
    """Publish one batch of unsent rows, oldest first.

    Returns how many were published, and the broker's error if one stopped
    the batch. Rows are locked with SKIP LOCKED, so several relays can run
    side by side. When the broker fails part-way, the rows already published
    are still marked sent, and the failing row records the error. One
    producer serves the whole batch and one UPDATE marks it: the relay's
    cost per row is the publish itself.
    """
    with session_scope() as session:
        rows = session.execute(
            select(Outbox.id, Outbox.task_name, Outbox.args, Outbox.kwargs, Outbox.queue,
                   Outbox.request_id)
            .where(Outbox.sent_at.is_(None))
            .order_by(Outbox.created_at)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        sent: list[uuid.UUID] = []
        error: Exception | None = None
        with app.producer_or_acquire() as producer:
            for row in rows:
                try:
                    app.send_task(
                        row.task_name,
                        args=row.args,
                        kwargs=row.kwargs,
                        task_id=str(row.id),
                        queue=row.queue,
                        producer=producer,
                        retry_policy=PUBLISH_RETRY_POLICY,
                        headers={"request_id": str(row.request_id) if row.request_id else None},
                    )
                except Exception as exc:  # kombu and redis raise many kinds; all mean "not sent"
                    error = exc
                    session.execute(
                        update(Outbox)
                        .where(Outbox.id == row.id)
                        .values(publish_attempts=Outbox.publish_attempts + 1,
                                last_error=f"{type(exc).__name__}: {exc}"[:1000])
                    )
                    break
                sent.append(row.id)
        if sent:
            session.execute(
                update(Outbox).where(Outbox.id.in_(sent)).values(sent_at=func.clock_timestamp())
            )
        return len(sent), error


def run_relay(app: Celery, should_stop=lambda: False) -> None:
    """Publish the outbox for as long as the process lives.

    Wakes on NOTIFY (sent by a trigger at commit) for low latency, and polls
    every IDLE_POLL_SECONDS anyway, so a lost notification costs at most that.
    Survives PostgreSQL and Redis outages with capped exponential backoff,
    and any other error too (logged with its traceback): a relay that dies
    stops every piece of deferred work, so it backs off and carries on.
    """
    backoff = 0.0
    while not should_stop():
        try:
            with psycopg.connect(libpq_url(), autocommit=True) as listener:
                listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                log.info("outbox relay listening on %s", NOTIFY_CHANNEL)
                while not should_stop():
                    sent, error = publish_pending(app)
                    if error is not None:
                        backoff = min(max(backoff * 2, 0.25), MAX_BACKOFF_SECONDS)
                        log.warning("broker unavailable (%s); retrying in %.2fs", error, backoff)
                        time.sleep(backoff)
                        continue
                    backoff = 0.0
                    if sent < BATCH_SIZE:
                        for _ in listener.notifies(timeout=IDLE_POLL_SECONDS, stop_after=1):
                            pass
        except (psycopg.OperationalError, sqlalchemy_exc.OperationalError) as exc:
            backoff = min(max(backoff * 2, 0.25), MAX_BACKOFF_SECONDS)
            log.warning("database unavailable (%s); relay retrying in %.2fs", exc, backoff)
            time.sleep(backoff)
        except Exception:
            backoff = min(max(backoff * 2, 0.25), MAX_BACKOFF_SECONDS)
            log.exception("outbox relay error; retrying in %.2fs", backoff)
            time.sleep(backoff)


def backlog() -> tuple[int, float | None]:
    """Unsent rows, and the age in seconds of the oldest one."""
    with session_scope() as session:
        count, oldest = session.execute(
            select(
                func.count(),
                func.extract("epoch", func.clock_timestamp() - func.min(Outbox.created_at)),
            ).where(Outbox.sent_at.is_(None))
        ).one()
    return count, float(oldest) if oldest is not None else None


def stale_after_seconds() -> int:
    """OUTBOX_STALE_SECONDS: how old the oldest unsent row may get before
    the outbox counts as stalled (relay down, or the broker unreachable)."""
    return env_int("OUTBOX_STALE_SECONDS", 120)


def is_stale(oldest_age: float | None) -> bool:
    return oldest_age is not None and oldest_age > stale_after_seconds()


def mark_started(task_id: str) -> None:
    """Stamp the outbox row of a task that is starting (first start wins):
    the commit-to-start latency is started_at - created_at."""
    try:
        row_id = uuid.UUID(task_id)
    except (TypeError, ValueError):
        return  # not from the outbox (beat, or a direct send)
    with session_scope() as session:
        session.execute(
            update(Outbox)
            .where(Outbox.id == row_id, Outbox.started_at.is_(None))
            .values(started_at=func.clock_timestamp())
        )
