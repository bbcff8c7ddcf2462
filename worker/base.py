"""The one task base class: transactions, retries, delivery bound, timing,
and the outbox row's start and finish.

Modelled on warehouse's WarehouseTask: a task body gets its database work
done inside `self.transaction()`, and any follow-up work it causes goes
through the outbox in that same transaction, so it is published only after
commit.

A task the relay published is the root of its work: its id is its outbox
row's id, and every task it causes (a chain's links, a task it sends)
carries that id as `root_id`. The work is finished when a task of it
returns without handing anything on: then its root row gets `finished_at`.
No task needs code of its own for this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import cached_property
from typing import Any

import psycopg
import redis
from billiard.einfo import ExceptionInfo
from celery import Task
from celery.exceptions import Reject
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.orm import Session

from db.engine import session_scope
from veza import limits, outbox
from veza.redis_store import redis_client
from veza.storage import StorageFull, StorageUnavailable

log = logging.getLogger(__name__)

# Errors that say "a dependency is unavailable right now", never "this input
# is bad": retried with backoff. Input errors are recorded by the task itself.
# A full disk is one: it passes once an operator frees space; so is a
# bucket out of reach.
TRANSIENT_ERRORS = (
    StorageFull,
    StorageUnavailable,
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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Outcome and run time are logged by Celery's tracer and counted from
        # its events (worker/metrics.py); this adds only what Celery lacks.
        request = self.request
        if request.called_directly:
            return super().__call__(*args, **kwargs)
        if self._delivered_too_often():
            self._drop_poison()
        self._stamp_outbox_start()
        # Task.__call__ runs the body under a copy of this request; taking
        # the children list first makes the copy share it, so what the body
        # sends (a chain, a follow-up task) shows here.
        handed_on = request.children
        result = super().__call__(*args, **kwargs)
        # A chain's next link and callbacks are sent by Celery after this
        # returns; they carry the work on, so this task did not finish it.
        if not (handed_on or request.chain or request.callbacks):
            self._stamp_outbox(outbox.mark_finished, "finish")
        return result

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Failed for good (an error no retry fixes, or retries exhausted):
        the root row stays unfinished, so the reconciler re-drives it; the
        error is what its dead reason will say if it never finishes."""
        error = f"{self.name}[{task_id}]: {type(exc).__name__}: {exc}"
        self._stamp_outbox(lambda root: outbox.record_error(root, error), "failure")

    def _root_id(self) -> str:
        root: str = self.request.root_id or self.request.id
        return root

    def _stamp_outbox(self, stamp: Callable[[str], None], what: str) -> None:
        """Stamps are bookkeeping: a database blip here must not fail a task
        whose work is done. A lost finish stamp costs one re-drive of
        idempotent work."""
        try:
            stamp(self._root_id())
        except TRANSIENT_ERRORS as exc:
            log.warning("could not stamp the outbox %s of %s: %s", what, self._root_id(), exc)

    def _stamp_outbox_start(self) -> None:
        """Record when an outbox task first started (commit-to-start latency).

        Only tasks the relay published carry an outbox id: they are their own
        root, while tasks a task started (a chain's links) are not.
        """
        request = self.request
        if request.retries or request.root_id not in (None, request.id):
            return
        self._stamp_outbox(outbox.mark_started, "start")

    def _drop_poison(self) -> None:
        """Take a message that keeps killing its worker off the broker for
        good, recorded dead in the outbox with its reason, so an operator
        sees it (`veza outbox`) and can replay it once the cause is fixed."""
        request = self.request
        reason = f"dropped: delivered {limits.MAX_DELIVERIES} times without finishing"
        log.error("task %s[%s] %s", self.name, request.id, reason)
        try:
            outbox.record_dead(
                self._root_id(),
                request.id,
                self.name,
                request.args or [],
                request.kwargs or {},
                f"{outbox.POISON}{self.name}[{request.id}] {reason}",
            )
        except TRANSIENT_ERRORS as exc:
            # Dropped unrecorded it would be lost: hand it back, and record it
            # on its next delivery (still past the bound). The pause keeps an
            # outage of the database from turning this into a busy loop.
            log.error("could not record poison %s (%s); handed back", request.id, exc)
            time.sleep(limits.RETRY_BACKOFF_BASE)
            raise Reject(reason, requeue=True) from exc
        # A replay starts counting from zero (if Redis fails here, the key expires anyway).
        with suppress(redis.RedisError):
            self._redis.delete(self._redeliveries_key())
        # Rejected, not succeeded: Flower and the task-rejected event show
        # it for what it is; requeue=False takes it off the broker for good.
        raise Reject(reason, requeue=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One database transaction, committed when the block ends."""
        with session_scope() as session:
            yield session

    @cached_property
    def _redis(self) -> redis.Redis:
        return redis_client()

    def _delivered_too_often(self) -> bool:
        """Count redeliveries of this message (same task id and retry number).

        acks_late hands back the task of a worker that died; a task that
        kills its worker every time would loop forever. Kombu marks a message
        it hands back as `redelivered`, so first deliveries cost nothing here.
        Retries have their own bound (max_retries): each starts a fresh count.
        """
        request = self.request
        if not (request.delivery_info or {}).get("redelivered"):
            return False
        key = self._redeliveries_key()
        try:
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, limits.VISIBILITY_TIMEOUT * 2)
            redeliveries: int
            redeliveries, _ = pipe.execute()
        except redis.RedisError:
            return False  # the broker just delivered this; if Redis blinked, run it
        return redeliveries + 1 >= limits.MAX_DELIVERIES

    def _redeliveries_key(self) -> str:
        return f"veza:redeliveries:{self.request.id}:{self.request.retries}"
