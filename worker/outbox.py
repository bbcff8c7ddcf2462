"""The transactional outbox.

A write and the work it causes commit together: `enqueue` adds an outbox row
in the caller's transaction, and the relay publishes committed rows to
Celery, using the row's id as the task id. A rolled-back write leaves no row,
so it enqueues nothing; a committed one stays until published, so Redis
being down delays work but never loses it.

A row's life, in its columns:
- unsent (`sent_at` NULL): a relay claims it for CLAIM_SECONDS
  (`claimed_until`), publishes it outside any transaction, then stamps
  `sent_at`;
- `started_at`: the first start of its task since it was last sent;
- `finished_at`: the last task of its work returned (the task base class,
  worker/base.py; for a chain, its last link);
- sent and never finished: the reconciler (worker/maintenance/outbox.py)
  makes it unsent again (`redrives` + 1), or, past OUTBOX_MAX_REDRIVES,
  records it dead (`dead_at`, `dead_reason`); a poison message is recorded
  dead at once. `replay` makes a dead row unsent again.
Tasks are idempotent, so every path that may send a row twice is safe.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from celery import Celery
from sqlalchemy import Connection, Row, func, or_, select, text, update
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.engine import get_engine, libpq_url, session_scope
from db.models import AuditLog, AuditSeverity, Outbox
from worker.config import env_int

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "veza_outbox"
BATCH_SIZE = 200
IDLE_POLL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 10.0
# Publishing gives up quickly: the relay has its own backoff, and a row that
# is not marked sent is simply tried again.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
# A relay's claim on a batch lasts this long: a relay that died mid-batch
# delays those rows by at most this, well inside OUTBOX_STALE_SECONDS. A live
# relay stops publishing at half of it (publish_pending), so it never sends
# a row whose claim another relay may already have taken over.
CLAIM_SECONDS = 30


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


def claim(conn: Connection, batch_size: int = BATCH_SIZE) -> list[Row]:
    """Claim up to `batch_size` unsent rows, oldest first, for CLAIM_SECONDS,
    and commit: the rows are not locked while they are published.
    SKIP LOCKED keeps two relays claiming at once from waiting on each
    other. The claim is a hint, not a promise (a crash loses it, and the
    rows are claimed again when it expires), so it commits asynchronously:
    no WAL flush on the relay's path."""
    claimable = (
        select(Outbox.id)
        .where(Outbox.sent_at.is_(None),
               or_(Outbox.claimed_until.is_(None), Outbox.claimed_until < func.clock_timestamp()))
        .order_by(Outbox.created_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    with conn.begin():
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        rows = conn.execute(
            update(Outbox)
            .where(Outbox.id.in_(claimable.scalar_subquery()))
            .values(claimed_until=func.clock_timestamp() + timedelta(seconds=CLAIM_SECONDS))
            .returning(Outbox.id, Outbox.task_name, Outbox.args, Outbox.kwargs, Outbox.queue,
                       Outbox.request_id, Outbox.created_at)
        ).all()
    return sorted(rows, key=lambda row: row.created_at)


def publish_pending(app: Celery, batch_size: int = BATCH_SIZE) -> tuple[int, Exception | None]:
    """Claim a batch, publish it with no transaction open, then mark it.

    Returns how many were published, and the broker's error if one stopped
    the batch. Publishing stops at the first error (the broker is down or
    hung: the socket timeouts in worker/celery_app.py bound the wait), or
    when half the claim has gone by; the rows published are marked sent,
    the failing one records the error, and the rest are released for the
    next attempt. One connection, one producer and one UPDATE serve the
    whole batch: the relay's cost per row is the publish itself. The
    connection is idle, in no transaction, while the batch is published.
    """
    with get_engine().connect() as conn:
        rows = claim(conn, batch_size)
        if not rows:
            return 0, None
        sent, error = publish(app, rows)
        settle(conn, sent, [row.id for row in rows[len(sent):]], error)
    return len(sent), error


def publish(app: Celery, rows: Sequence[Row]) -> tuple[list[uuid.UUID], Exception | None]:
    """Publish claimed rows in order until one fails or half the claim has
    gone by; the ids published, and the error that stopped them."""
    stop_at = time.monotonic() + CLAIM_SECONDS / 2
    sent: list[uuid.UUID] = []
    error: Exception | None = None
    with app.producer_or_acquire() as producer:
        for row in rows:
            if time.monotonic() > stop_at:
                break
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
                break
            sent.append(row.id)
    return sent, error


def settle(conn: Connection, sent: Sequence[uuid.UUID], unsent: Sequence[uuid.UUID],
           error: Exception | None) -> None:
    """Mark a claimed batch: `sent` rows sent, `unsent` ones released (the
    first of them met `error`, when there is one)."""
    with conn.begin():
        if sent:
            conn.execute(
                update(Outbox).where(Outbox.id.in_(sent))
                .values(sent_at=func.clock_timestamp(), claimed_until=None)
            )
        if unsent:
            conn.execute(update(Outbox).where(Outbox.id.in_(unsent)).values(claimed_until=None))
        if unsent and error is not None:
            conn.execute(
                update(Outbox)
                .where(Outbox.id == unsent[0])
                .values(publish_attempts=Outbox.publish_attempts + 1,
                        last_error=f"{type(error).__name__}: {error}"[:1000])
            )


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


@dataclass(frozen=True)
class Summary:
    unsent: int
    in_flight: int  # sent, not finished, not dead: the reconciler's to watch
    dead: int
    oldest_unsent_age: float | None  # seconds


def summary() -> Summary:
    """What the outbox owes, from the unfinished rows only (an index)."""
    with session_scope() as session:
        unsent, in_flight, dead, oldest = session.execute(
            select(
                func.count().filter(Outbox.sent_at.is_(None)),
                func.count().filter(Outbox.sent_at.is_not(None), Outbox.dead_at.is_(None)),
                func.count().filter(Outbox.dead_at.is_not(None)),
                func.extract("epoch", func.clock_timestamp()
                             - func.min(Outbox.created_at).filter(Outbox.sent_at.is_(None))),
            ).where(Outbox.finished_at.is_(None))
        ).one()
    return Summary(unsent, in_flight, dead, float(oldest) if oldest is not None else None)


def dead_rows(limit: int = 50) -> list[Row]:
    """The dead rows, oldest death first, for `veza outbox`."""
    with session_scope() as session:
        return session.execute(
            select(Outbox.id, Outbox.task_name, Outbox.args, Outbox.dead_at, Outbox.redrives,
                   Outbox.dead_reason)
            .where(Outbox.dead_at.is_not(None), Outbox.finished_at.is_(None))
            .order_by(Outbox.dead_at)
            .limit(limit)
        ).all()


def stale_after_seconds() -> int:
    """OUTBOX_STALE_SECONDS: how old the oldest unsent row may get before
    the outbox counts as stalled (relay down, or the broker unreachable)."""
    return env_int("OUTBOX_STALE_SECONDS", 120)


def is_stale(oldest_age: float | None) -> bool:
    return oldest_age is not None and oldest_age > stale_after_seconds()


def row_id(task_id: str | None) -> uuid.UUID | None:
    """The outbox row a task id names, if it can be one (a UUID)."""
    try:
        return uuid.UUID(task_id)
    except (TypeError, ValueError):
        return None  # not from the outbox (beat, or a direct send)


def _stamp(task_id: str, while_null, **values: Any) -> None:
    """Set `values` on the outbox row a task id names, if there is one and
    its column `while_null` is still NULL."""
    if (row := row_id(task_id)) is None:
        return
    with session_scope() as session:
        session.execute(
            update(Outbox).where(Outbox.id == row, while_null.is_(None)).values(**values)
        )


def mark_started(task_id: str) -> None:
    """Stamp the outbox row of a task that is starting (first start wins):
    the commit-to-start latency is started_at - created_at."""
    _stamp(task_id, Outbox.started_at, started_at=func.clock_timestamp())


def mark_finished(task_id: str) -> None:
    """The row's work is done: nothing re-drives it any more, and a row
    recorded dead meanwhile (a re-drive given up on, then the original
    finished after all) is not dead; its reason stays as history."""
    _stamp(task_id, Outbox.finished_at, finished_at=func.clock_timestamp(), dead_at=None)


def record_error(task_id: str, error: str) -> None:
    """A task of the row's work failed for good: the reconciler re-drives
    the row, and this is the reason it gives if the row ends dead."""
    _stamp(task_id, Outbox.finished_at, last_error=error[:1000])


def record_dead(root_id: str, task_id: str, task_name: str, args: Sequence[Any],
                kwargs: dict[str, Any], reason: str) -> None:
    """Record a message dropped for good (a poison message). The work it
    was part of is the outbox row `root_id`, which becomes dead; a message
    that came from no outbox row (beat, a direct send) gets a dead row of
    its own, with its task and arguments, so that it can be replayed too."""
    now = func.clock_timestamp()
    with session_scope() as session:
        root = row_id(root_id)
        found = root is not None and session.execute(
            update(Outbox)
            .where(Outbox.id == root)
            .values(dead_at=now, dead_reason=reason, finished_at=None, claimed_until=None,
                    sent_at=func.coalesce(Outbox.sent_at, now))
        ).rowcount
        if found:
            return
        session.execute(
            insert(Outbox)
            .values(id=row_id(task_id) or uuid.uuid4(), task_name=task_name, args=list(args),
                    kwargs=dict(kwargs), sent_at=now, dead_at=now, dead_reason=reason)
            .on_conflict_do_update(index_elements=[Outbox.id],
                                   set_={"dead_at": now, "dead_reason": reason,
                                         "finished_at": None})
        )


def replay(ids: Sequence[uuid.UUID] | None) -> list[Row]:
    """Dead rows (those of `ids`, or all when None) back to unsent, with
    their re-drive count reset, for the relay to publish again under the
    same task id. `dead_reason` is kept (why it last died), and an audit row
    records the replay with each row's reason. Returns the rows replayed."""
    condition = [Outbox.dead_at.is_not(None)]
    if ids is not None:
        condition.append(Outbox.id.in_(ids))
    with session_scope() as session:
        rows = session.execute(
            update(Outbox)
            .where(*condition)
            .values(sent_at=None, started_at=None, finished_at=None, claimed_until=None,
                    redrives=0, dead_at=None)
            .returning(Outbox.id, Outbox.task_name, Outbox.dead_reason)
        ).all()
        if rows:
            session.add(AuditLog(
                event_type="outbox.replay",
                event_data={"rows": [{"id": str(row.id), "task": row.task_name,
                                      "dead_reason": row.dead_reason} for row in rows]},
                resource_type="outbox",
                severity=AuditSeverity.warning,
            ))
    return rows
