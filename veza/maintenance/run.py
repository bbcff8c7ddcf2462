"""The rules every maintenance task shares, in one place.

`run_exclusively(name, body, ...)` runs a plain function `body(run,
**options)` so that it (worker/maintenance_task.py makes a Celery task of
it, `veza maintenance run` calls it through that task):

- runs at most once at a time across all workers: it holds a PostgreSQL
  session advisory lock on a connection of its own for the whole run, so a
  killed worker's lock goes with its connection; a second run that finds the
  lock taken is recorded as `skipped` and does nothing;
- records itself: one `maintenance_runs` row (running, then succeeded /
  dry_run / cancelled / failed / skipped, with counts) and one `audit_logs`
  row when it ends;
- stops (recorded failed) if the lock's connection is lost, which would
  have released the lock: it checks the connection with each progress;
- reports progress (phase, counts, and how far along the phase is when the
  body said what to expect: `run.expect`) to the log, to its own run row
  (the console reads it there), and to `report`, which a Celery task turns
  into task state PROGRESS and a `task-progress` event, so Flower and
  `AsyncResult` show it;
- stops at the next batch boundary, recorded `cancelled`, once an operator
  asked it to (`request_cancel`): the request is read with the progress,
  so at most progress.INTERVAL_SECONDS after a batch ends;
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
from psycopg.types.json import Jsonb
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.engine import libpq_url, session_scope
from db.models import AuditSeverity, MaintenanceRun
from veza import audit, limits, progress
from veza.progress import ProgressReport

log = logging.getLogger(__name__)

BATCH_TARGET_SECONDS = 0.1

# How a run's end is logged and audited, by status (otherwise info).
RUN_SEVERITY = {"failed": AuditSeverity.error, "cancelled": AuditSeverity.warning}
RUN_LOG_LEVEL = {"failed": logging.ERROR, "cancelled": logging.WARNING}


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
    # What the current phase expects to count, under which key (run.expect).
    total: int | None = None
    _total_key: str | None = None
    _total_base: int = 0
    _started: float = field(default_factory=time.monotonic)
    _phase_deadline: float | None = None
    _phase_cut: bool = False
    _last_progress: float = 0.0

    def add(self, **counts: int) -> None:
        self.counts.update(counts)

    def expect(self, total: int, of: str) -> None:
        """The current phase will count about `total` under the key `of`:
        progress then says how far along it is (`done` of `total`), which
        the console draws as a bar. An estimate is fine: rows may come and
        go while the phase runs, so `done` is capped at `total`."""
        self.total, self._total_key, self._total_base = total, of, self.counts[of]

    @property
    def done(self) -> int | None:
        if self._total_key is None or self.total is None:
            return None
        return min(self.total, self.counts[self._total_key] - self._total_base)

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
        self.total, self._total_key = None, None
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
        """Publish progress, at most once per interval unless `force`d; raise
        Cancelled if an operator asked this run to stop. Bodies call it
        between batches (Run.batches does), so that is where a run stops."""
        now = time.monotonic()
        if not force and now - self._last_progress < progress.INTERVAL_SECONDS:
            return
        self._last_progress = now
        meta = self.progress_meta()
        # Logged too: `veza maintenance run` shows progress on the terminal.
        log.info("%s progress (%s): %s", self.name, self.phase_name or "-", dict(self.counts))
        # On the lock's connection: the same round trip shows the lock is
        # still held (a run must not outlive it) and reads a cancel request.
        cancel_requested_by = self.lock.record_progress(self.run_id, meta) if self.lock else None
        self.report(meta)
        if cancel_requested_by is not None:
            raise Cancelled(cancel_requested_by)

    def progress_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "phase": self.phase_name,
            "counts": dict(self.counts),
        }
        if self.done is not None:
            meta.update(done=self.done, total=self.total)
        return meta


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
            return {"status": "skipped", "run_id": run_id, "dry_run": dry_run}
        run = Run(name, start_run(name, dry_run, task_id), dry_run, task_id, report, lock=lock)
        try:
            body(run, **options)
        except Cancelled as cancel:
            status = finish_run(run, "cancelled", f"cancelled by {cancel.operator}")
        except BaseException as exc:  # a time limit or a kill signal too: record, re-raise
            finish_run(run, "failed", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        else:
            # A dry run changed nothing: it is no success of the task's.
            status = finish_run(run, "dry_run" if dry_run else "succeeded")
        run.report(run.progress_meta())
        return {
            "status": status,
            "run_id": run.run_id,
            "dry_run": dry_run,
            "counts": dict(run.counts),
        }


class Cancelled(Exception):
    """An operator asked the run to stop (request_cancel); raised between
    batches, so everything done so far is committed and consistent."""

    def __init__(self, operator: str) -> None:
        super().__init__(f"cancelled by {operator}")
        self.operator = operator


def request_cancel(run_id: int, operator: str) -> bool:
    """Ask a running run to stop at its next batch boundary; True when it
    is running (asked now or before), False when it is not running. The
    first request is audited with the operator's name; repeating it is a
    no-op."""
    with session_scope() as session:
        run = session.execute(
            select(MaintenanceRun).where(MaintenanceRun.id == run_id).with_for_update()
        ).scalar_one_or_none()
        if run is None or run.status != "running":
            return False
        if run.cancel_requested_at is None:
            run.cancel_requested_at = func.clock_timestamp()
            run.cancel_requested_by = operator
            audit.record(
                session,
                "maintenance.cancel_requested",
                {"run_id": run_id, "task": run.task_name, "operator": operator},
                resource_type="maintenance_run",
                resource_id=run_id,
                severity=AuditSeverity.warning,
            )
        return True


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

    def record_progress(self, run_id: int, meta: dict[str, Any]) -> str | None:
        """Write the run's progress to its row, and return who asked it to
        stop, if anyone. Raise LockLost unless the lock's connection still
        answers. Autocommit: one short statement, no transaction left open."""
        try:
            row = self.conn.execute(
                "UPDATE maintenance_runs SET phase = %s, counts = %s, progress = %s,"
                " progress_at = clock_timestamp() WHERE id = %s"
                " RETURNING cancel_requested_at IS NOT NULL, cancel_requested_by",
                (meta["phase"], Jsonb(meta["counts"]), Jsonb(meta), run_id),
            ).fetchone()
        except psycopg.Error as exc:
            raise LockLost(f"the connection holding the lock {self.key} was lost: {exc}") from exc
        if row is None or not row[0]:
            return None
        return row[1] or "an operator"

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


def finish_run(run: Run, status: str, error: str | None = None) -> str:
    with session_scope() as session:
        session.execute(
            update(MaintenanceRun)
            .where(MaintenanceRun.id == run.run_id)
            .values(
                status=status,
                counts=dict(run.counts),
                phase=run.phase_name,
                progress=run.progress_meta(),
                error=error,
                finished_at=func.clock_timestamp(),
            )
        )
        record_audit(
            session, run.name, run.run_id, run.task_id, run.dry_run, status, dict(run.counts), error
        )
    log.log(
        RUN_LOG_LEVEL.get(status, logging.INFO),
        "%s run %d %s: %s%s",
        run.name,
        run.run_id,
        status,
        dict(run.counts),
        f" ({error})" if error else "",
    )
    return status


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
        severity=RUN_SEVERITY.get(status, AuditSeverity.info),
    )
