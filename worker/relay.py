"""The outbox relay: publishes committed outbox rows (veza/outbox.py) to
Celery, each under its row's id as task id.

Claim, commit, publish, mark: a batch is claimed with a lease in one short
transaction, published with no transaction open (so no row lock or idle
transaction is held while Redis is slow or hung), then marked sent in one
UPDATE (docs/operations.md, "The relay and the broker").

Rows of a job that names a batch job (veza/jobs.py) are published together,
up to BATCH_ROWS per message of the batch job (worker/base.py, BatchTask),
under a task id of its own; a row alone is published as itself, under its
row's id, as any other row. Batches form where work waits: while the batch
job's queue already holds a message no worker has taken (every worker
busy), the job's rows are left in the outbox, where they coalesce, instead
of queueing in Redis one task each; the relay looks at the queue every
HOLD_POLL_SECONDS and publishes as soon as it is empty (other rows within
HOLD_MAX_SECONDS). Held rows wait HOLD_ROW_SECONDS at most: once the
oldest of them is that old, they all go, in full batches (releasing only the
old ones would trickle them out in batches of two or three under a steady
overload); and with no worker on the queue at all, the outbox still empties
into Redis, so its backlog and age keep meaning "the relay or the broker is
stuck".
Unloaded, a row goes out at once, alone.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
import redis
from celery import Celery
from psycopg import sql
from sqlalchemy import Connection, Row, func, or_, select, text, update
from sqlalchemy import exc as sqlalchemy_exc

from db.engine import get_engine, libpq_url
from db.models import Outbox
from veza.jobs import BATCH_ROWS, BATCHES
from veza.outbox import NOTIFY_CHANNEL
from veza.redis_store import redis_client
from worker.metrics import queue_depth

log = logging.getLogger(__name__)

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
# While a batchable job's rows are held, how often the relay looks at its
# queue again (a row held waits at most this long after a worker frees up),
# and how long it holds at most before claiming the other rows again.
HOLD_POLL_SECONDS = 0.005
HOLD_MAX_SECONDS = 0.05
HOLD_ROW_SECONDS = 1.0

# A claimed row, as claim's RETURNING gives it.
Claimed = Row[uuid.UUID, str, list[Any], dict[str, Any], str | None, uuid.UUID | None, datetime]


def claim(
    conn: Connection, batch_size: int = BATCH_SIZE, held: frozenset[str] = frozenset()
) -> list[Claimed]:
    """Claim up to `batch_size` unsent rows, oldest first, for CLAIM_SECONDS,
    and commit: the rows are not locked while they are published. Rows of
    the tasks `held` are left unsent, unless the oldest of them is older
    than HOLD_ROW_SECONDS.
    SKIP LOCKED keeps two relays claiming at once from waiting on each
    other. The claim is a hint, not a promise (a crash loses it, and the
    rows are claimed again when it expires), so it commits asynchronously:
    no WAL flush on the relay's path."""
    oldest_held = (
        select(func.min(Outbox.created_at))
        .where(Outbox.sent_at.is_(None), Outbox.task_name.in_(held))
        .scalar_subquery()
    )
    held_too_long = oldest_held < func.clock_timestamp() - timedelta(seconds=HOLD_ROW_SECONDS)
    claimable = (
        select(Outbox.id)
        .where(
            Outbox.sent_at.is_(None),
            or_(Outbox.claimed_until.is_(None), Outbox.claimed_until < func.clock_timestamp()),
            *([or_(Outbox.task_name.not_in(held), held_too_long)] if held else []),
        )
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
            .returning(
                Outbox.id,
                Outbox.task_name,
                Outbox.args,
                Outbox.kwargs,
                Outbox.queue,
                Outbox.request_id,
                Outbox.created_at,
            )
        ).all()
    return sorted(rows, key=lambda row: row.created_at)


def publish_pending(
    app: Celery, batch_size: int = BATCH_SIZE, held: frozenset[str] = frozenset()
) -> tuple[int, Exception | None]:
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
        rows = claim(conn, batch_size, held)
        if not rows:
            return 0, None
        sent, error = publish(app, rows)
        settle(conn, sent, [row.id for row in rows[len(sent) :]], error)
    return len(sent), error


def publish(app: Celery, rows: Sequence[Claimed]) -> tuple[list[uuid.UUID], Exception | None]:
    """Publish claimed rows in order, batched where their job allows, until
    one publication fails or half the claim has gone by; the ids published,
    and the error that stopped them."""
    stop_at = time.monotonic() + CLAIM_SECONDS / 2
    sent: list[uuid.UUID] = []
    error: Exception | None = None
    with app.producer_or_acquire() as producer:
        for group in publications(rows):
            if time.monotonic() > stop_at:
                break
            try:
                send(app, producer, group)
            except Exception as exc:  # noqa: BLE001 (kombu and redis raise many kinds; all mean "not sent")
                error = exc
                break
            sent.extend(row.id for row in group)
    return sent, error


def publications(rows: Sequence[Claimed]) -> list[list[Claimed]]:
    """The rows as they are published, in the order of each publication's
    first row: a row whose job has a batch job (and no keyword arguments)
    joins the open batch of its job and queue, up to BATCH_ROWS; any other
    row goes alone. Rows sent after all (`settle`) are whole publications,
    so a batch is never half marked."""
    groups: list[list[Claimed]] = []
    open_batches: dict[tuple[str, str | None], list[Claimed]] = {}
    for row in rows:
        if row.task_name not in BATCHES or row.kwargs:
            groups.append([row])
            continue
        batch = open_batches.get((row.task_name, row.queue))
        if batch is None or len(batch) >= BATCH_ROWS:
            batch = open_batches[(row.task_name, row.queue)] = []
            groups.append(batch)
        batch.append(row)
    return groups


def send(app: Celery, producer: Any, group: Sequence[Claimed]) -> None:
    """Publish one row as its own task, under its row id; or many as one
    task of their batch job, which names each row, its request and its
    arguments."""
    first = group[0]
    if len(group) == 1:
        name, args, kwargs, task_id = first.task_name, first.args, first.kwargs, str(first.id)
        request_id = str(first.request_id) if first.request_id else None
    else:
        name, kwargs, task_id, request_id = (
            BATCHES[first.task_name].name,
            {},
            str(uuid.uuid4()),
            None,
        )
        args = [
            [
                [str(row.id), str(row.request_id) if row.request_id else None, row.args]
                for row in group
            ]
        ]
    app.send_task(
        name,
        args=args,
        kwargs=kwargs,
        task_id=task_id,
        queue=first.queue,
        producer=producer,
        retry_policy=PUBLISH_RETRY_POLICY,
        headers={"request_id": request_id},
        # The rows a batch carries, whole in Flower and the task events
        # (Celery cuts a longer repr at 1 KiB): what ran a row can be traced.
        argsrepr=repr(args) if len(group) > 1 else None,
    )


def held_jobs(app: Celery, client: redis.Redis) -> frozenset[str]:
    """The batchable jobs whose batch job's queue has a message waiting: no
    worker is free to take another now, so their rows wait in the outbox,
    where they make bigger batches. Redis unreachable holds nothing: the
    publish meets the error and backs off."""
    held = set()
    try:
        for name, batch in BATCHES.items():
            queue = app.amqp.router.route({}, batch.name)["queue"].name
            if queue_depth(client, queue):
                held.add(name)
    except redis.RedisError:
        return frozenset()
    return frozenset(held)


def wait_while_held(app: Celery, client: redis.Redis) -> None:
    """Until a held job's queue empties, or HOLD_MAX_SECONDS: only Redis is
    asked meanwhile, not the outbox."""
    until = time.monotonic() + HOLD_MAX_SECONDS
    while time.monotonic() < until:
        time.sleep(HOLD_POLL_SECONDS)
        if not held_jobs(app, client):
            return


def settle(
    conn: Connection,
    sent: Sequence[uuid.UUID],
    unsent: Sequence[uuid.UUID],
    error: Exception | None,
) -> None:
    """Mark a claimed batch: `sent` rows sent, `unsent` ones released (the
    first of them met `error`, when there is one)."""
    with conn.begin():
        if sent:
            conn.execute(
                update(Outbox)
                .where(Outbox.id.in_(sent))
                .values(sent_at=func.clock_timestamp(), claimed_until=None)
            )
        if unsent:
            conn.execute(update(Outbox).where(Outbox.id.in_(unsent)).values(claimed_until=None))
        if unsent and error is not None:
            conn.execute(
                update(Outbox)
                .where(Outbox.id == unsent[0])
                .values(
                    publish_attempts=Outbox.publish_attempts + 1,
                    last_error=f"{type(error).__name__}: {error}"[:1000],
                )
            )


def run_relay(app: Celery, should_stop: Callable[[], bool] = lambda: False) -> None:
    """Publish the outbox for as long as the process lives.

    Wakes on NOTIFY (sent by a trigger at commit) for low latency, and polls
    every IDLE_POLL_SECONDS anyway, so a lost notification costs at most that.
    Survives PostgreSQL and Redis outages with capped exponential backoff,
    and any other error too (logged with its traceback): a relay that dies
    stops every piece of deferred work, so it backs off and carries on.
    """
    backoff = 0.0
    client = redis_client()
    while not should_stop():
        try:
            with psycopg.connect(libpq_url(), autocommit=True) as listener:
                listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                log.info("outbox relay listening on %s", NOTIFY_CHANNEL)
                while not should_stop():
                    held = held_jobs(app, client)
                    sent, error = publish_pending(app, held=held)
                    if error is not None:
                        backoff = min(max(backoff * 2, 0.25), MAX_BACKOFF_SECONDS)
                        log.warning("broker unavailable (%s); retrying in %.2fs", error, backoff)
                        time.sleep(backoff)
                        continue
                    backoff = 0.0
                    if sent >= BATCH_SIZE:
                        continue  # more may be waiting
                    if held:
                        wait_while_held(app, client)
                    else:
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
