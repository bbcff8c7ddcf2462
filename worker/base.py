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

A batch task (`BatchTask`, veza/jobs.py's `batch`) carries many outbox rows
in its one argument: their start, finish and failure are stamped on all of
them in one statement each, and a batch that fails for good, or keeps
killing its worker, is split in halves until the one bad row is alone,
which then fails (or goes dead) as a task of its own would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import cached_property
from typing import Any, NoReturn

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
        self._stamp_outbox(lambda rows: outbox.record_error(rows, error), "failure")

    def _root_id(self) -> str:
        root: str = self.request.root_id or self.request.id
        return root

    def outbox_rows(self) -> list[str]:
        """The outbox rows whose work this task does: its root's."""
        return [self._root_id()]

    def _publishes_its_rows(self) -> bool:
        """Whether the relay published this task for its rows (it stamps
        their start): only tasks that are their own root, not those a task
        started (a chain's links)."""
        return self.request.root_id in (None, self.request.id)

    def _stamp_outbox(self, stamp: Callable[[list[str]], None], what: str) -> None:
        """Stamps are bookkeeping: a database blip here must not fail a task
        whose work is done. A lost finish stamp costs one re-drive of
        idempotent work."""
        try:
            stamp(self.outbox_rows())
        except TRANSIENT_ERRORS as exc:
            log.warning("could not stamp the outbox %s of %s: %s", what, self.outbox_rows(), exc)

    def _stamp_outbox_start(self) -> None:
        """Record when an outbox task first started (commit-to-start latency)."""
        if self.request.retries or not self._publishes_its_rows():
            return
        self._stamp_outbox(outbox.mark_started, "start")

    def _drop_poison(self) -> NoReturn:
        """Take a message that keeps killing its worker off the broker for
        good, recorded dead in the outbox with its reason, so an operator
        sees it (`veza outbox`) and can replay it once the cause is fixed."""
        request = self.request
        reason = f"dropped: delivered {limits.MAX_DELIVERIES} times without finishing"
        log.error("task %s[%s] %s", self.name, request.id, reason)
        try:
            outbox.record_dead(
                self.outbox_rows()[0],
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


# One outbox row as a batch task carries it: the row's id, the request it
# was owed on behalf of (or None), and the row's own arguments.
BatchRow = tuple[str, str | None, list[Any]]


class BatchTask(VezaTask):
    """A task of many outbox rows of one job at once (worker/relay.py
    publishes them so): its one argument is the rows (BatchRow), and its
    outbox rows are theirs, whoever sent it (the relay, or a batch that
    split)."""

    def rows(self) -> list[BatchRow]:
        rows: list[BatchRow] = self.request.args[0]
        return rows

    def outbox_rows(self) -> list[str]:
        return [row_id for row_id, _, _ in self.rows()]

    def _publishes_its_rows(self) -> bool:
        return True

    def run_or_split(self, rows: list[BatchRow], work: Callable[[list[BatchRow]], object]) -> None:
        """Do the rows' work; if it fails for good (not a transient error,
        which retries the whole batch), hand the rows on as two halves, so
        that one bad row does not hold back the others' work. A bad row
        alone fails as a task of its own would: its error is recorded, and
        the reconciler re-drives it, then records it dead."""
        try:
            work(rows)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            if len(rows) == 1:
                raise
            log.warning(
                "batch %s[%s] of %d rows failed (%r); split",
                self.name,
                self.request.id,
                len(rows),
                exc,
            )
            self._split(rows)

    def _split(self, rows: list[BatchRow]) -> None:
        """Two batch tasks of half the rows each. The rows stay unfinished
        meanwhile, so a split lost on its way is re-driven like any row."""
        half = len(rows) // 2
        queue = (self.request.delivery_info or {}).get("routing_key")
        for part in (rows[:half], rows[half:]):
            self.apply_async(args=[part], queue=queue)

    def _drop_poison(self) -> NoReturn:
        """A batch that keeps killing its worker is split instead: only the
        row that does it, alone, is dropped and recorded dead."""
        rows = self.rows()
        if len(rows) == 1:
            super()._drop_poison()  # raises
        reason = f"delivered {limits.MAX_DELIVERIES} times without finishing; split"
        log.error("batch %s[%s] of %d rows %s", self.name, self.request.id, len(rows), reason)
        self._split(rows)
        raise Reject(reason, requeue=False)
