"""Maintenance runs by outcome, the last success of each task, and the work
they sent again: read from `maintenance_runs` for the exporter's metrics
and the operator console.

The outcomes are a run's final statuses (veza/maintenance/run.py); a run
still `running` has none yet. Re-drives are what the runs counted as sent
again: outbox rows re-driven (`outbox_redriven`, veza/maintenance/
outbox_redrive.py), stalled files requeued (`stale_requeued`) and failed
files requeued by an operator (`failed_requeued`, veza/files/requeue.py),
by a run that was not a dry run.

Each query reads an index: idx_maintenance_runs_status (outcomes: one
range per task and outcome, of the runs that finished in a window; last
success: one probe per task) and idx_maintenance_runs_redrives (only the
runs that re-drove something).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import BigInteger, String, column, func, select, text, values
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db.models import MaintenanceRun

OUTCOMES = ("succeeded", "failed", "skipped", "cancelled", "dry_run")

# The counts key of each kind of re-drive; the same three keys as the SQL
# function maintenance_redrives (migration 0011), which the index is on.
REDRIVES = {
    "outbox": "outbox_redriven",
    "stale_file": "stale_requeued",
    "failed_file": "failed_requeued",
}


def zero_counts(tasks: Iterable[str]) -> dict[tuple[str, str], int]:
    """Every (task, outcome) pair of `tasks`, at 0."""
    return {(task, outcome): 0 for task in tasks for outcome in OUTCOMES}


def outcome_counts(
    session: Session,
    tasks: Iterable[str],
    after: datetime | None = None,
    up_to: datetime | None = None,
) -> dict[tuple[str, str], int]:
    """(task, outcome) -> runs of `tasks` that finished in (`after`,
    `up_to`] (unbounded where None), every pair present (0 when none).
    From the start (no `after`) it is one pass over the index; after a
    time, one index range per pair (idx_maintenance_runs_status leads with
    status and task name): a window of minutes reads a few entries, however
    many runs the table holds."""
    counts = zero_counts(tasks)
    if not counts:
        return {}
    window: list[ColumnElement[bool]] = [MaintenanceRun.finished_at.is_not(None)]
    if up_to is not None:
        window.append(MaintenanceRun.finished_at <= up_to)
    if after is None:
        everything = (
            select(MaintenanceRun.task_name, MaintenanceRun.status, func.count())
            .where(MaintenanceRun.status.in_(OUTCOMES), *window)
            .group_by(MaintenanceRun.task_name, MaintenanceRun.status)
        )
        for task, outcome, n in session.execute(everything):
            if (task, outcome) in counts:
                counts[(task, outcome)] = n
        return counts
    window.append(MaintenanceRun.finished_at > after)
    pairs = values(column("task", String), column("outcome", String), name="pairs").data(
        list(counts)
    )
    runs = (
        select(func.count())
        .where(
            MaintenanceRun.status == pairs.c.outcome,
            MaintenanceRun.task_name == pairs.c.task,
            *window,
        )
        .scalar_subquery()
    )
    return {
        (task, outcome): n
        for task, outcome, n in session.execute(select(pairs.c.task, pairs.c.outcome, runs))
    }


def last_successes(session: Session, tasks: Iterable[str]) -> dict[str, datetime | None]:
    """Each task's latest succeeded run's end (None: never succeeded): one
    index probe per task."""
    rows = [(task,) for task in tasks]
    if not rows:
        return {}
    names = values(column("task", String), name="tasks").data(rows)
    latest = (
        select(func.max(MaintenanceRun.finished_at))
        .where(MaintenanceRun.status == "succeeded", MaintenanceRun.task_name == names.c.task)
        .scalar_subquery()
    )
    return dict(session.execute(select(names.c.task, latest)).tuples().all())


def redrive_counts(session: Session) -> dict[str, int]:
    """Each kind of re-drive with the work it sent again, over every run."""
    # Literally the index's predicate: a bind parameter would keep the
    # planner from proving that the partial index covers the query.
    redrove = text("NOT dry_run AND maintenance_redrives(counts) > 0")
    sums = session.execute(
        select(
            *(
                func.coalesce(func.sum(MaintenanceRun.counts[key].astext.cast(BigInteger)), 0)
                for key in REDRIVES.values()
            )
        ).where(redrove)
    ).one()
    return {kind: int(n) for kind, n in zip(REDRIVES, sums, strict=True)}
