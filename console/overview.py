"""What the console shows, read fresh for every page and live refresh: the
maintenance runs, the file pipeline, the outbox, and the console's own
recent actions with where their work stands now."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, case, func, select

from db.engine import session_scope
from db.models import AuditLog, MaintenanceRun, Outbox
from veza import outbox
from veza.files import states

RUNS_SHOWN = 50
ACTIONS_SHOWN = 20
# An outbox row's stage in its life (veza/outbox.py).
STAGE = case(
    (Outbox.dead_at.is_not(None), "dead"),
    (Outbox.finished_at.is_not(None), "done"),
    (Outbox.started_at.is_not(None), "running"),
    (Outbox.sent_at.is_not(None), "sent"),
    else_="unsent",
)


def runs() -> Sequence[Row[MaintenanceRun, int]]:
    """The latest maintenance runs, newest first, each with its duration so
    far (a running one's up to now, by the database's clock)."""
    with session_scope() as session:
        return session.execute(
            select(
                MaintenanceRun,
                func.extract(
                    "epoch",
                    func.coalesce(MaintenanceRun.finished_at, func.now())
                    - MaintenanceRun.started_at,
                ).label("seconds"),
            )
            .order_by(MaintenanceRun.started_at.desc(), MaintenanceRun.id.desc())
            .limit(RUNS_SHOWN)
        ).all()


@dataclass(frozen=True)
class Files:
    counts: dict[str, int]
    oldest: Row[Any] | None
    failed: Sequence[Row[Any]]
    unscannable: Sequence[Row[Any]]


def files() -> Files:
    return Files(
        states.counts(),
        states.oldest_not_done(),
        states.failed("failed"),
        states.failed("unscannable"),
    )


@dataclass(frozen=True)
class OwedWork:
    summary: outbox.Summary
    stale: bool
    dead: list[outbox.DeadRow]
    poison: list[outbox.DeadRow]


def owed_work() -> OwedWork:
    owed = outbox.summary()
    dead = outbox.dead_rows()
    return OwedWork(
        owed,
        outbox.is_stale(owed.oldest_unsent_age),
        [row for row in dead if not _poison(row.dead_reason)],
        [row for row in dead if _poison(row.dead_reason)],
    )


def _poison(reason: str | None) -> bool:
    return (reason or "").startswith(outbox.POISON)


# The audit rows of the console's actions (actions.py writes them, or the
# core functions it calls do).
ACTION_EVENTS = (
    "file.retried",
    "outbox.replay",
    "maintenance.run_requested",
    "maintenance.cancel_requested",
)


@dataclass(frozen=True)
class Action:
    at: datetime
    operator: str | None
    event: str
    target: str
    now: str  # where its work stands now


def recent_actions() -> list[Action]:
    with session_scope() as session:
        rows = session.execute(
            select(
                AuditLog.created_at, AuditLog.event_type, AuditLog.event_data, AuditLog.resource_id
            )
            .where(AuditLog.event_type.in_(ACTION_EVENTS))
            .order_by(AuditLog.created_at.desc())
            .limit(ACTIONS_SHOWN)
        ).all()
    return [_action(row) for row in rows]


def _action(row: Row[Any]) -> Action:
    data: dict[str, Any] = row.event_data
    operator = data.get("operator")
    if row.event_type == "file.retried":
        state = states.state_of(row.resource_id) or "deleted"
        return Action(row.created_at, operator, "retry", f"file {row.resource_id}", state)
    if row.event_type == "outbox.replay":
        ids = [uuid.UUID(replayed["id"]) for replayed in data["rows"]]
        target = str(ids[0]) if len(ids) == 1 else f"{len(ids)} outbox rows"
        return Action(row.created_at, operator, "replay", target, _outbox_progress(ids))
    task = data["task"].removeprefix("maintenance.")
    if row.event_type == "maintenance.cancel_requested":
        return Action(
            row.created_at,
            operator,
            "cancel",
            f"run {row.resource_id} ({task})",
            _run_status(row.resource_id),
        )
    label = "dry run" if data["dry_run"] else "run now"
    owed = _outbox_progress([uuid.UUID(data["outbox_id"])])
    return Action(row.created_at, operator, label, task, owed)


def _run_status(run_id: int) -> str:
    with session_scope() as session:
        status = session.get(MaintenanceRun, run_id)
    return status.status if status else "deleted"


def _outbox_progress(ids: list[uuid.UUID]) -> str:
    """Where outbox rows stand: `done` when every one finished, else how
    many are at each stage (`1 unsent, 2 done`). A row no longer there
    finished and was pruned (OUTBOX_RETENTION_DAYS)."""
    with session_scope() as session:
        stages = Counter(session.execute(select(STAGE).where(Outbox.id.in_(ids))).scalars())
    stages["done"] += len(ids) - stages.total()
    if stages.keys() == {"done"}:
        return "done"
    return ", ".join(f"{n} {stage}" for stage, n in stages.items() if n)
