"""The one task base class: transactions, retries, delivery bound, timing.

Modelled on warehouse's WarehouseTask: a task body gets its database work
done inside `self.transaction()`, and any follow-up work it causes goes
through the outbox in that same transaction, so it is published only after
commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import psycopg
import redis
from celery import Task
from celery.exceptions import Reject
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.orm import Session

from db.engine import session_scope
from worker import limits, outbox
from worker.config import settings
from worker.storage import StorageFull

log = logging.getLogger(__name__)

# Errors that say "a dependency is unavailable right now", never "this input
# is bad": retried with backoff. Input errors are recorded by the task itself.
# A full disk is one: it passes once an operator frees space.
TRANSIENT_ERRORS = (
    StorageFull,
    sqlalchemy_exc.OperationalError,
    sqlalchemy_exc.InterfaceError,
    psycopg.OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
)


class VezaTask(Task):
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = limits.RETRY_BACKOFF_BASE
    retry_backoff_max = limits.RETRY_BACKOFF_MAX
    retry_jitter = True
    max_retries = limits.MAX_RETRIES
    soft_time_limit, time_limit = limits.DEFAULT_TIME_LIMITS

    def __call__(self, *args, **kwargs):
        # Outcome and run time are logged by Celery's tracer and counted from
        # its events (worker/metrics.py); this adds only what Celery lacks.
        if self._delivered_too_often():
            reason = f"dropped: delivered {limits.MAX_DELIVERIES} times without finishing"
            log.error("task %s[%s] %s", self.name, self.request.id, reason)
            # Rejected, not succeeded: Flower and the task-rejected event show
            # it for what it is; requeue=False takes it off the broker for good.
            raise Reject(reason, requeue=False)
        self._stamp_outbox_start()
        return super().__call__(*args, **kwargs)

    def _stamp_outbox_start(self) -> None:
        """Record when an outbox task first started (commit-to-start latency).

        Only tasks the relay published carry an outbox id: they are their own
        root, while tasks a task started (a chain's links) are not. The stamp
        is a measurement, so a database blip here must not fail the task:
        the task's own work has retries for that.
        """
        request = self.request
        if request.called_directly or request.retries or request.root_id not in (None, request.id):
            return
        try:
            outbox.mark_started(request.id)
        except TRANSIENT_ERRORS as exc:
            log.warning("could not stamp outbox start of %s: %s", request.id, exc)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One database transaction, committed when the block ends."""
        with session_scope() as session:
            yield session

    @cached_property
    def _redis(self) -> redis.Redis:
        return redis.Redis.from_url(settings.redis_url)

    def _delivered_too_often(self) -> bool:
        """Count redeliveries of this message (same task id and retry number).

        acks_late hands back the task of a worker that died; a task that
        kills its worker every time would loop forever. Kombu marks a message
        it hands back as `redelivered`, so first deliveries cost nothing here.
        Retries have their own bound (max_retries): each starts a fresh count.
        """
        request = self.request
        if request.called_directly or not (request.delivery_info or {}).get("redelivered"):
            return False
        key = f"veza:redeliveries:{request.id}:{request.retries}"
        try:
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, limits.VISIBILITY_TIMEOUT * 2)
            redeliveries, _ = pipe.execute()
        except redis.RedisError:
            return False  # the broker just delivered this; if Redis blinked, run it
        return redeliveries + 1 >= limits.MAX_DELIVERIES
