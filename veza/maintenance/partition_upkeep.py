"""Monthly partitions of messages and audit_logs: keep the window made
(db/partitions.py: months behind and ahead of this one), list them, and
drop old ones without blocking writers.

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
from datetime import date

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.engine import libpq_url, session_scope
from db.models import AuditSeverity
from db.partitions import (
    PARTITION_NAME,
    PARTITIONED_TABLES,
    add_months,
    ensure_monthly_partitions,
    month_of,
    partition_name,
    this_month,
)
from veza import audit
from veza.maintenance.run import Run
from veza.settings import get_settings
from veza.statements import compose

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


def attached(conn: psycopg.Connection, parent: str) -> list[Partition]:
    """The partitions of `parent`, oldest first."""
    rows = conn.execute(
        "SELECT c.relname, i.inhdetachpending FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (parent,),
    ).fetchall()
    return sorted(
        (
            Partition(name, month, pending)
            for name, pending in rows
            if (month := partition_month(name))
        ),
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
    detached = [
        Partition(name, month, attached=False)
        for (name,) in rows
        if (month := partition_month(name))
    ]
    return pending + detached


def partition_month(name: str) -> date | None:
    match = PARTITION_NAME.match(name)
    return date(int(match[2]), int(match[3]), 1) if match else None


def detach_concurrently(parent: str, partition: Partition) -> None:
    """Detach without an exclusive lock on the parent (needs autocommit)."""
    how = sql.SQL("FINALIZE" if partition.detach_pending else "CONCURRENTLY")
    with psycopg.connect(libpq_url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(
                sql.Identifier(parent), sql.Identifier(partition.name), how
            )
        )


def ensure(
    run: Run,
    months_ahead: int | None = None,
    today: date | None = None,
    months_behind: int | None = None,
) -> None:
    """Create the window's missing partitions (db/partitions.py: from
    PARTITION_MONTHS_BEHIND months back to PARTITION_MONTHS_AHEAD ahead of
    this month, or of `today`'s), for every partitioned table. A missing
    partition for next month is an incident (inserts dated then would have
    failed but for the create-on-demand path): logged as an error and
    audited."""
    current = month_of(today or this_month())
    next_month = add_months(current, 1)
    with session_scope() as session:
        conn = session.connection()
        for table in PARTITIONED_TABLES:
            missing = conn.execute(
                text("SELECT to_regclass(:name) IS NULL"),
                {"name": partition_name(table, next_month)},
            ).scalar_one()
            if missing:
                run.add(missing_next_month=1)
                log.error(
                    "partition %s for next month is missing", partition_name(table, next_month)
                )
                if not run.dry_run:
                    audit.record(
                        session,
                        "maintenance.partition_missing",
                        {"table": table, "month": next_month.isoformat()},
                        resource_type="partition",
                        severity=AuditSeverity.error,
                    )
        if not run.dry_run:
            created = ensure_monthly_partitions(
                conn, current, behind=months_behind, ahead=months_ahead
            )
            run.add(partitions_created=len(created))


def drop_old_audit_partitions(run: Run) -> None:
    """Audit logs older than AUDIT_RETENTION_MONTHS go a whole month at a
    time: nothing references audit_logs, so a partition just detaches."""
    horizon = add_months(this_month(), -get_settings().audit_retention_months)
    with psycopg.connect(libpq_url(), autocommit=True) as conn:
        doomed = leftovers(conn, "audit_logs") + [
            p for p in attached(conn, "audit_logs") if p.end <= horizon and not p.detach_pending
        ]
    for partition in doomed:
        run.add(audit_partitions_dropped=1)
        if not run.dry_run:
            drop("audit_logs", partition)


def to_regclass(session: Session, name: str) -> bool:
    return bool(
        session.execute(
            text("SELECT to_regclass(:name) IS NOT NULL"),
            {"name": sql.Identifier(name).as_string()},
        ).scalar_one()
    )


def drop(
    parent: str,
    partition: Partition,
    before_drop: Callable[[Session, str], int] = lambda session, name: 0,
) -> int:
    """Detach (unless already detached) and drop; `before_drop` runs in the
    DROP's transaction, so what it fixes and the drop commit together.
    Returns what `before_drop` returned (0 when the table was gone)."""
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
        session.execute(
            text("SELECT set_config('lock_timeout', :timeout, true)"),
            {"timeout": DROP_LOCK_TIMEOUT},
        )
        if not to_regclass(session, partition.name):
            return 0
        tables = {"parent": sql.Identifier(parent), "partition": sql.Identifier(partition.name)}
        session.execute(
            compose("LOCK TABLE {parent}, {partition} IN ACCESS EXCLUSIVE MODE", **tables)
        )
        result = before_drop(session, partition.name)
        session.execute(compose("DROP TABLE {partition}", **tables))
    log.info("dropped partition %s", partition.name)
    return result
