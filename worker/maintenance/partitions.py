"""Monthly partitions of messages and audit_logs: keep them made ahead,
list them, and drop old ones without blocking writers.

Dropping goes DETACH ... CONCURRENTLY (which does not take an exclusive
lock on the parent, so chat inserts carry on), then DROP. A run killed in
between leaves either a detach pending (finalized next time) or a detached
table still named like a partition (dropped next time): `leftovers` finds
both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.engine import libpq_url, session_scope
from db.models import AuditLog, AuditSeverity
from db.partitions import PARTITIONED_TABLES, PARTITION_NAME, create_monthly_partitions, partition_name
from worker.maintenance.config import maintenance_settings
from worker.maintenance.run import Run

log = logging.getLogger(__name__)

DROP_LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class Partition:
    name: str
    month: date
    detach_pending: bool = False
    attached: bool = True

    @property
    def end(self) -> date:
        return add_months(self.month, 1)


def add_months(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def this_month() -> date:
    return datetime.now(timezone.utc).date().replace(day=1)


def attached(conn: psycopg.Connection, parent: str) -> list[Partition]:
    """The partitions of `parent`, oldest first."""
    rows = conn.execute(
        "SELECT c.relname, i.inhdetachpending FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (parent,),
    ).fetchall()
    return sorted(
        (Partition(name, month_of(name), pending) for name, pending in rows if month_of(name)),
        key=lambda p: p.month,
    )


def leftovers(conn: psycopg.Connection, parent: str) -> list[Partition]:
    """Partitions whose drop was interrupted: a detach still pending, or a
    table named like a partition of `parent` that is no longer attached."""
    pending = [p for p in attached(conn, parent) if p.detach_pending]
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE %s"
        " AND NOT c.relispartition",
        (f"{parent}\\_y%",),
    ).fetchall()
    detached = [Partition(name, month_of(name), attached=False) for (name,) in rows if month_of(name)]
    return pending + detached


def month_of(name: str) -> date | None:
    match = PARTITION_NAME.match(name)
    return date(int(match[2]), int(match[3]), 1) if match else None


def detach_concurrently(parent: str, partition: Partition) -> None:
    """Detach without an exclusive lock on the parent (needs autocommit)."""
    with psycopg.connect(libpq_url(), autocommit=True) as conn:
        if partition.detach_pending:
            conn.execute(f'ALTER TABLE {parent} DETACH PARTITION "{partition.name}" FINALIZE')
        else:
            conn.execute(f'ALTER TABLE {parent} DETACH PARTITION "{partition.name}" CONCURRENTLY')


def ensure(run: Run, months_ahead: int | None = None, today: date | None = None) -> None:
    """Create this month's partitions and `months_ahead` more, for every
    partitioned table. A missing partition for next month is an incident
    (inserts dated then would fail): logged as an error and audited."""
    months_ahead = maintenance_settings.partition_months_ahead if months_ahead is None else months_ahead
    first = (today or this_month()).replace(day=1)
    next_month = add_months(first, 1)
    with session_scope() as session:
        conn = session.connection()
        for table in PARTITIONED_TABLES:
            missing = conn.execute(
                text("SELECT to_regclass(:name) IS NULL"),
                {"name": partition_name(table, next_month)},
            ).scalar_one()
            if missing:
                run.add(missing_next_month=1)
                log.error("partition %s for next month is missing", partition_name(table, next_month))
                if not run.dry_run:
                    session.add(AuditLog(
                        event_type="maintenance.partition_missing",
                        event_data={"table": table, "month": next_month.isoformat()},
                        resource_type="partition",
                        severity=AuditSeverity.error,
                    ))
            if run.dry_run:
                continue
            created = create_monthly_partitions(conn, table, first, months_ahead + 1)
            run.add(partitions_created=len(created))


def drop_old_audit_partitions(run: Run) -> None:
    """Audit logs older than AUDIT_RETENTION_MONTHS go a whole month at a
    time: nothing references audit_logs, so a partition just detaches."""
    horizon = add_months(this_month(), -maintenance_settings.audit_retention_months)
    with psycopg.connect(libpq_url(), autocommit=True) as conn:
        doomed = leftovers(conn, "audit_logs") + [
            p for p in attached(conn, "audit_logs") if p.end <= horizon and not p.detach_pending
        ]
    for partition in doomed:
        run.add(audit_partitions_dropped=1)
        if not run.dry_run:
            drop("audit_logs", partition)


def to_regclass(session: Session, name: str) -> bool:
    return session.execute(text("SELECT to_regclass(:name) IS NOT NULL"),
                           {"name": f'"{name}"'}).scalar_one()


def drop(parent: str, partition: Partition,
         before_drop: Callable[[Session, str], None] = lambda session, name: None) -> None:
    """Detach (unless already detached) and drop; `before_drop` runs in the
    DROP's transaction, so what it fixes and the drop commit together."""
    if partition.attached:
        detach_concurrently(parent, partition)
    with session_scope() as session:
        # Take the locks the DROP needs (it removes the detached table's
        # foreign-key triggers from the parent) before `before_drop` locks
        # any counter row: otherwise a chat insert holding the parent and
        # waiting on that counter row deadlocks with us (seen in
        # bench/retention.py). The lock is held for this short transaction
        # only; past lock_timeout the run fails and the next run finishes
        # the drop (`leftovers`), rather than queueing chat traffic behind us.
        session.execute(text(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
        if to_regclass(session, partition.name):
            session.execute(text(
                f'LOCK TABLE {parent}, "{partition.name}" IN ACCESS EXCLUSIVE MODE'))
        before_drop(session, partition.name)
        session.execute(text(f'DROP TABLE IF EXISTS "{partition.name}"'))
    log.info("dropped partition %s", partition.name)
