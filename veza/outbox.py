"""The transactional outbox.

A write and the work it causes commit together: `enqueue` adds an outbox row
in the caller's transaction, and the relay (worker/relay.py) publishes
committed rows to Celery, using the row's id as the task id. A rolled-back write leaves no row,
so it enqueues nothing; a committed one stays until published, so Redis
being down delays work but never loses it.

A row's life, in its columns:
- unsent (`sent_at` NULL): a relay claims it for a while
  (`claimed_until`), publishes it outside any transaction, then stamps
  `sent_at`;
- `started_at`: the first start of its task since it was last sent;
- `finished_at`: the last task of its work returned (the task base class,
  worker/base.py; for a chain, its last link);
- sent and never finished: the reconciler (veza/maintenance/outbox_redrive.py)
  makes it unsent again (`redrives` + 1), or, past OUTBOX_MAX_REDRIVES,
  records it dead (`dead_at`, `dead_reason`); a poison message is recorded
  dead at once. `replay` makes a dead row unsent again.
Tasks are idempotent, so every path that may send a row twice is safe.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import InstrumentedAttribute, Session

from db.engine import affected, session_scope
from db.models import AuditSeverity, Outbox
from veza import audit
from veza.jobs import Job
from veza.logs import bound_request_id
from veza.settings import get_settings

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "veza_outbox"
# How a poison message's dead reason starts (worker/base.py drops it).
POISON = "poison: "


def enqueue(
    session: Session,
    job: Job,
    *args: Any,
    queue: str | None = None,
    request_id: uuid.UUID | None = None,
    **kwargs: Any,
) -> uuid.UUID:
    """Owe `job(*args, **kwargs)`, in the caller's transaction, on behalf of
    `request_id`, or else of the request whose work is running (a retry from
    a request, a task's follow-up), so that its id reaches the work's logs
    and audit rows."""
    row = Outbox(
        id=uuid.uuid4(),
        task_name=job.name,
        args=list(args),
        kwargs=kwargs,
        queue=queue,
        request_id=request_id or bound_request_id(),
    )
    session.add(row)
    return row.id


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
                func.extract(
                    "epoch",
                    func.clock_timestamp()
                    - func.min(Outbox.created_at).filter(Outbox.sent_at.is_(None)),
                ),
            ).where(Outbox.finished_at.is_(None))
        ).one()
    # SQLAlchemy types EXTRACT as a non-null int; here it is a numeric, and
    # NULL when nothing is unsent.
    age = float(oldest) if oldest is not None else None  # type: ignore[redundant-expr]
    return Summary(unsent, in_flight, dead, age)


# id, task_name, args, dead_at, redrives, dead_reason
DeadRow = Row[uuid.UUID, str, list[Any], datetime | None, int, str | None]


def dead_rows(limit: int = 50) -> Sequence[DeadRow]:
    """The dead rows, oldest death first, for `veza outbox`."""
    with session_scope() as session:
        return session.execute(
            select(
                Outbox.id,
                Outbox.task_name,
                Outbox.args,
                Outbox.dead_at,
                Outbox.redrives,
                Outbox.dead_reason,
            )
            .where(Outbox.dead_at.is_not(None), Outbox.finished_at.is_(None))
            .order_by(Outbox.dead_at)
            .limit(limit)
        ).all()


def stale_after_seconds() -> int:
    """OUTBOX_STALE_SECONDS: how old the oldest unsent row may get before
    the outbox counts as stalled (relay down, or the broker unreachable)."""
    return get_settings().outbox_stale_seconds


def is_stale(oldest_age: float | None) -> bool:
    return oldest_age is not None and oldest_age > stale_after_seconds()


def row_id(task_id: str | None) -> uuid.UUID | None:
    """The outbox row a task id names, if it can be one (a UUID)."""
    try:
        return uuid.UUID(task_id)
    except (TypeError, ValueError):
        return None  # not from the outbox (beat, or a direct send)


def _stamp(
    task_ids: Sequence[str], while_null: InstrumentedAttribute[datetime | None], **values: Any
) -> None:
    """Set `values` on the outbox rows the task ids name (one statement for
    a batch's rows), those whose column `while_null` is still NULL.

    Committed asynchronously (no WAL flush on a task's path): a stamp is
    bookkeeping, and the few a PostgreSQL crash may lose cost a re-drive of
    idempotent work (a finish) or a start time never known."""
    rows = [row for row in map(row_id, task_ids) if row is not None]
    if not rows:
        return
    with session_scope() as session:
        session.execute(text("SET LOCAL synchronous_commit = off"))
        session.execute(
            update(Outbox).where(Outbox.id.in_(rows), while_null.is_(None)).values(**values)
        )


def mark_started(task_ids: Sequence[str]) -> None:
    """Stamp the outbox rows of a task that is starting (first start wins):
    the commit-to-start latency is started_at - created_at."""
    _stamp(task_ids, Outbox.started_at, started_at=func.clock_timestamp())


def mark_finished(task_ids: Sequence[str]) -> None:
    """The rows' work is done: nothing re-drives them any more, and a row
    recorded dead meanwhile (a re-drive given up on, then the original
    finished after all) is not dead; its reason stays as history."""
    _stamp(task_ids, Outbox.finished_at, finished_at=func.clock_timestamp(), dead_at=None)


def record_error(task_ids: Sequence[str], error: str) -> None:
    """A task of the rows' work failed for good: the reconciler re-drives
    the rows, and this is the reason it gives if a row ends dead."""
    _stamp(task_ids, Outbox.finished_at, last_error=error[:1000])


def record_dead(
    root_id: str,
    task_id: str,
    task_name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    reason: str,
) -> None:
    """Record a message dropped for good (a poison message). The work it
    was part of is the outbox row `root_id`, which becomes dead; a message
    that came from no outbox row (beat, a direct send) gets a dead row of
    its own, with its task and arguments, so that it can be replayed too."""
    now = func.clock_timestamp()
    with session_scope() as session:
        root = row_id(root_id)
        found = root is not None and affected(
            session.execute(
                update(Outbox)
                .where(Outbox.id == root)
                .values(
                    dead_at=now,
                    dead_reason=reason,
                    finished_at=None,
                    claimed_until=None,
                    sent_at=func.coalesce(Outbox.sent_at, now),
                )
            )
        )
        if found:
            return
        session.execute(
            insert(Outbox)
            .values(
                id=row_id(task_id) or uuid.uuid4(),
                task_name=task_name,
                args=list(args),
                kwargs=dict(kwargs),
                sent_at=now,
                dead_at=now,
                dead_reason=reason,
            )
            .on_conflict_do_update(
                index_elements=[Outbox.id],
                set_={"dead_at": now, "dead_reason": reason, "finished_at": None},
            )
        )


def replay(
    ids: Sequence[uuid.UUID] | None, operator: str | None = None
) -> Sequence[Row[uuid.UUID, str, str | None]]:
    """Dead rows (those of `ids`, or all when None) back to unsent, with
    their re-drive count reset, for the relay to publish again under the
    same task id. `dead_reason` is kept (why it last died), and an audit row
    records the replay with each row's reason and who asked. Returns the
    rows replayed: none for a row that is not dead (replayed already)."""
    condition = [Outbox.dead_at.is_not(None)]
    if ids is not None:
        condition.append(Outbox.id.in_(ids))
    with session_scope() as session:
        rows = session.execute(
            update(Outbox)
            .where(*condition)
            .values(
                sent_at=None,
                started_at=None,
                finished_at=None,
                claimed_until=None,
                redrives=0,
                dead_at=None,
            )
            .returning(Outbox.id, Outbox.task_name, Outbox.dead_reason)
        ).all()
        if rows:
            audit.record(
                session,
                "outbox.replay",
                {
                    "operator": operator,
                    "rows": [
                        {"id": str(row.id), "task": row.task_name, "dead_reason": row.dead_reason}
                        for row in rows
                    ],
                },
                resource_type="outbox",
                severity=AuditSeverity.warning,
            )
    return rows
