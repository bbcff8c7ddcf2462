"""The rules every maintenance task shares, in one place.

`run_exclusively(name, body, ...)` runs a plain function `body(run,
**options)` so that it (worker/maintenance_task.py makes a Celery task of
it, `veza maintenance run` calls it through that task):

- runs at most once at a time across all workers: it holds a PostgreSQL
  session advisory lock on a connection of its own for the whole run, so a
  killed worker's lock goes with its connection; a second run that finds the
  lock taken is recorded as `skipped` and does nothing;
- records itself: one `maintenance_runs` row (running, then succeeded /
  failed / skipped, with counts) and one `audit_logs` row when it ends;
- stops (recorded failed) if the lock's connection is lost, which would
  have released the lock: it checks the connection with each progress;
- reports progress (phase and counts) to the log and to `report`, which a
  Celery task turns into task state PROGRESS and a `task-progress` event,
  so Flower and `AsyncResult` show it;
- hands the body a `dry_run` flag and a batch sizer that aims at about
  BATCH_TARGET_SECONDS per batch, so that every transaction stays short;
- lets a body split itself into named phases (`run.phase`), reported with
  the progress, each with a time budget of its own out of the run's
  (MAINTENANCE_RUN_BUDGET_SECONDS): one huge step cannot starve the others,
  and what a phase leaves undone the next run resumes.

Kill-safety is the bodies' job (each batch is one transaction that leaves a
consistent state); the run log marks a run that died mid-way as failed the
next time the task gets the lock.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import func, update
from sqlalchemy.orm import Session

from db.engine import libpq_url, session_scope
from db.models import AuditSeverity, MaintenanceRun
from veza import audit, limits

log = logging.getLogger(__name__)

BATCH_TARGET_SECONDS = 0.1

ProgressReport = Callable[[dict[str, Any]], None]
PROGRESS_INTERVAL_SECONDS = 1.0


class BatchSizer:
    """Grows or shrinks the batch size so that a batch takes about `target`
    seconds: a fixed size is either too slow on a loaded server (long
    transactions, lock waits for chat traffic) or too chatty on an idle one."""

    def __init__(
        self,
        initial: int = 500,
        minimum: int = 10,
        maximum: int = 20_000,
        target: float = BATCH_TARGET_SECONDS,
    ) -> None:
        self.size, self.minimum, self.maximum, self.target = initial, minimum, maximum, target

    def observe(self, seconds: float) -> None:
        if seconds > 2 * self.target:
            self.size = max(self.minimum, self.size // 2)
        elif seconds < self.target / 2:
            self.size = min(self.maximum, self.size * 2)


def timed_batches(
    initial: int = 500,
    after_each: Callable[[], None] = lambda: None,
    keep_going: Callable[[], bool] = lambda: True,
) -> Iterator[int]:
    """Yield batch sizes until `keep_going()` says stop (checked after each
    batch, so at least one batch always runs); the caller does one batch
    per size and breaks when there is nothing left. The time between two
    yields is the batch's duration, which sizes the next one."""
    sizer = BatchSizer(initial)
    while True:
        started = time.monotonic()
        yield sizer.size
        sizer.observe(time.monotonic() - started)
        after_each()
        if not keep_going():
            return


@dataclass
class Run:
    """What a task body sees of its run."""

    name: str
    run_id: int
    dry_run: bool
    task_id: str | None = None
    # Where progress goes besides the log (a Celery task's state).
    report: ProgressReport = field(default=lambda meta: None)
    counts: Counter[str] = field(default_factory=Counter)
    lock: AdvisoryLock | None = None
    budget_seconds: float = field(default_factory=limits.run_budget_seconds)
    phase_name: str | None = None
    _started: float = field(default_factory=time.monotonic)
    _phase_deadline: float | None = None
    _phase_cut: bool = False
    _last_progress: float = 0.0

    def add(self, **counts: int) -> None:
        self.counts.update(counts)

    def batches(self, initial: int = 500) -> Iterator[int]:
        """Batch sizes for a loop of batches, publishing progress after
        each; the loop ends early when the current phase is out of time
        (`out_of_time` tells the body so)."""
        return timed_batches(initial, after_each=self.progress, keep_going=self._within_budget)

    @property
    def out_of_time(self) -> bool:
        return self._phase_deadline is not None and time.monotonic() >= self._phase_deadline

    def _within_budget(self) -> bool:
        if self.out_of_time:
            self._phase_cut = True
            return False
        return True

    @contextmanager
    def phase(self, name: str, left: int) -> Iterator[None]:
        """A named step of the run. `left` counts this phase and those
        still to come: its budget is an equal share of what remains of the
        run's, so time a quick phase leaves over goes to the later ones. A
        phase whose batches were cut short is counted `<name>_out_of_time`."""
        remaining = self.budget_seconds - (time.monotonic() - self._started)
        self.phase_name, self._phase_cut = name, False
        self._phase_deadline = time.monotonic() + max(0.0, remaining) / left
        self.progress(force=True)
        try:
            yield
        finally:
            if self._phase_cut:
                self.add(**{f"{name}_out_of_time": 1})
                log.warning(
                    "%s: phase %s ran out of time; the next run resumes it", self.name, name
                )
            self._phase_deadline = None

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_progress = now
        # At most once per interval: a run must not outlive its lock.
        if self.lock:
            self.lock.check()
        # Logged too: `veza maintenance run` shows progress on the terminal.
        log.info("%s progress (%s): %s", self.name, self.phase_name or "-", dict(self.counts))
        self.report(
            {
                "run_id": self.run_id,
                "dry_run": self.dry_run,
                "phase": self.phase_name,
                "counts": dict(self.counts),
            }
        )


def run_exclusively(
    name: str,
    body: Callable[..., None],
    dry_run: bool,
    options: dict[str, Any],
    task_id: str | None = None,
    report: ProgressReport = lambda meta: None,
) -> dict[str, Any]:
    """Run `body(run, **options)` as the maintenance run `name`, under the
    rules above; its outcome as the task's result."""
    with advisory_lock(f"veza:maintenance:{name}") as lock:
        if lock is None:
            run_id = record_skipped(name, dry_run, task_id)
            log.info("%s: another run holds the lock; skipped (run %d)", name, run_id)
            return {"status": "skipped", "run_id": run_id}
        run = Run(name, start_run(name, dry_run, task_id), dry_run, task_id, report, lock=lock)
        try:
            body(run, **options)
        except BaseException as exc:  # a time limit or a kill signal too: record, re-raise
            finish_run(run, "failed", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finish_run(run, "succeeded")
        run.progress(force=True)
        return {"status": "succeeded", "run_id": run.run_id, "counts": dict(run.counts)}


class LockLost(RuntimeError):
    """The connection holding the run's advisory lock is gone, and the lock
    with it: another run may start, so this one must stop."""


# Without keepalives a connection dropped by a firewall or a failover goes
# unnoticed on an idle socket; the lock would be gone while we carry on.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


@dataclass
class AdvisoryLock:
    """A session-level advisory lock held on `conn`, which does nothing
    else: the lock lasts exactly as long as that connection."""

    conn: psycopg.Connection
    key: str

    def check(self) -> None:
        """Raise LockLost unless the lock's connection still answers."""
        try:
            self.conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise LockLost(f"the connection holding the lock {self.key} was lost: {exc}") from exc

    def release(self) -> None:
        """Unlock; a dead connection released the lock already, and must
        not mask whatever ended the run."""
        try:
            self.conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (self.key,))
        except psycopg.Error as exc:
            log.warning("could not release the lock %s (its connection is gone): %s", self.key, exc)


@contextmanager
def advisory_lock(key: str) -> Iterator[AdvisoryLock | None]:
    """A session-level advisory lock on a connection of its own, held for
    the block (the work itself runs in many short transactions elsewhere);
    None when another run holds it. If the process dies, PostgreSQL drops
    the connection and the lock."""
    with psycopg.connect(libpq_url(), autocommit=True, **KEEPALIVES) as conn:
        [(acquired,)] = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
        ).fetchall()
        lock = AdvisoryLock(conn, key) if acquired else None
        try:
            yield lock
        finally:
            if lock:
                lock.release()


def start_run(name: str, dry_run: bool, task_id: str | None) -> int:
    with session_scope() as session:
        # We hold the lock, so a row still `running` is a run that died.
        session.execute(
            update(MaintenanceRun)
            .where(MaintenanceRun.task_name == name, MaintenanceRun.status == "running")
            .values(
                status="failed",
                error="abandoned: the run died before finishing",
                finished_at=func.clock_timestamp(),
            )
        )
        row = MaintenanceRun(task_name=name, task_id=task_id, dry_run=dry_run)
        session.add(row)
        session.flush()
        return row.id


def finish_run(run: Run, status: str, error: str | None = None) -> None:
    with session_scope() as session:
        session.execute(
            update(MaintenanceRun)
            .where(MaintenanceRun.id == run.run_id)
            .values(
                status=status,
                counts=dict(run.counts),
                error=error,
                finished_at=func.clock_timestamp(),
            )
        )
        record_audit(
            session, run.name, run.run_id, run.task_id, run.dry_run, status, dict(run.counts), error
        )
    log.log(
        logging.ERROR if error else logging.INFO,
        "%s run %d %s: %s%s",
        run.name,
        run.run_id,
        status,
        dict(run.counts),
        f" ({error})" if error else "",
    )


def record_skipped(name: str, dry_run: bool, task_id: str | None) -> int:
    with session_scope() as session:
        row = MaintenanceRun(
            task_name=name,
            task_id=task_id,
            dry_run=dry_run,
            status="skipped",
            finished_at=func.clock_timestamp(),
        )
        session.add(row)
        session.flush()
        record_audit(session, name, row.id, task_id, dry_run, "skipped", {}, None)
        return row.id


def record_audit(
    session: Session,
    name: str,
    run_id: int,
    task_id: str | None,
    dry_run: bool,
    status: str,
    counts: dict[str, int],
    error: str | None,
) -> None:
    audit.record(
        session,
        name,
        {
            "run_id": run_id,
            "task_id": task_id,
            "dry_run": dry_run,
            "status": status,
            "counts": counts,
            "error": error,
        },
        resource_type="maintenance_run",
        resource_id=run_id,
        severity=AuditSeverity.error if status == "failed" else AuditSeverity.info,
    )
