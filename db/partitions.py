"""Monthly partitions of messages and audit_logs.

The SQL function create_monthly_partitions (migration 0001) does the work;
this module is the Python side: which tables are partitioned, how a
partition is named, and what schema comparison should ignore.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

from psycopg import errors as pg_errors

from sqlalchemy import Connection, text

PARTITIONED_TABLES = ("messages", "audit_logs")
PARTITION_NAME = re.compile(r"^(messages|audit_logs)_y(\d{4})m(\d{2})$")


def partition_name(table: str, month: date) -> str:
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def create_monthly_partitions(conn: Connection, table: str, first_month: date, months: int) -> list[str]:
    """Create the missing partitions of `table` for `months` months from
    `first_month`; returns the names created. Idempotent and concurrency-safe
    (the SQL function takes an advisory lock per table)."""
    rows = conn.execute(
        text("SELECT create_monthly_partitions(CAST(:t AS regclass), :m, :n)"),
        {"t": table, "m": first_month, "n": months},
    )
    return [r[0] for r in rows]


NO_PARTITION = re.compile(r'no partition of relation "(\w+)" found for row')
# The detail shows the key in the session's TimeZone and DateStyle, e.g.
# "(created_at) = (2025-11-30 19:00:00-05)" for 00:00 UTC on 1 December.
PARTITION_KEY = re.compile(r"\(created_at\)\s*=\s*\(([^)]*)\)")


def missing_partition(error: BaseException | None) -> tuple[str, date] | None:
    """(table, month) when `error` is PostgreSQL refusing a row because its
    month has no partition (there is deliberately no DEFAULT partition, so
    a row never lands where retention and detaching cannot reach it);
    None for any other error.

    Partitions are UTC months, so the month is the key's, converted to UTC:
    the detail's local date is another month near a boundary in any zone
    but UTC. A key that does not read as an ISO timestamp with its offset
    (a session with another DateStyle) is None: better the original error
    than a partition for the wrong month."""
    if not isinstance(error, pg_errors.CheckViolation):
        return None
    table = NO_PARTITION.search(str(error))
    if table is None or table.group(1) not in PARTITIONED_TABLES:
        return None
    key = PARTITION_KEY.search(error.diag.message_detail or "")
    moment = _aware_timestamp(key.group(1)) if key else None
    if moment is None:
        return None
    utc = moment.astimezone(timezone.utc)
    return table.group(1), date(utc.year, utc.month, 1)


def _aware_timestamp(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic filter: partitions are made at run time, not modelled."""
    if type_ == "table":
        return not PARTITION_NAME.match(name or "")
    if type_ == "foreign_key_constraint":
        # PostgreSQL clones a reference to a partitioned table into one
        # internal constraint per partition.
        return not PARTITION_NAME.match(obj.referred_table.name)
    return True
