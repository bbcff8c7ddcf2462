"""Monthly partitions of messages and audit_logs.

The SQL function create_monthly_partitions (migration 0001) does the work;
this module is the Python side: which tables are partitioned, how a
partition is named, which months must exist (the window), what to do when
a row meets a month that does not, and what schema comparison should ignore.

The window runs from PARTITION_MONTHS_BEHIND months back to
PARTITION_MONTHS_AHEAD months ahead of the current UTC month. The past
matters as much as the future: a backfill, an import or rows written by an
older deployment carry yesterday's dates, and on the 1st of a month
"yesterday" is last month.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from psycopg import errors as pg_errors
from sqlalchemy import Connection, text
from sqlalchemy import exc as sa_exc

from db.engine import get_engine
from veza.settings import get_settings

T = TypeVar("T")

# The fewest past months kept: last month always, and the one before it, so
# that "N days ago" for any N up to a month has a partition on any day.
MIN_MONTHS_BEHIND = 2

PARTITIONED_TABLES = ("messages", "audit_logs")
PARTITION_NAME = re.compile(r"^(messages|audit_logs)_y(\d{4})m(\d{2})$")


def partition_name(table: str, month: date) -> str:
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def add_months(month: date, months: int) -> date:
    """The first day of the month `months` after (or before) `month`'s."""
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def month_of(moment: date | datetime) -> date:
    """The first day of the UTC month holding `moment` (a date is taken
    as it is; an aware datetime is converted to UTC first)."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC).date()
    return moment.replace(day=1)


def this_month() -> date:
    return month_of(datetime.now(UTC))


def months_between(earlier: date, later: date) -> int:
    return (later.year - earlier.year) * 12 + later.month - earlier.month


def months_ahead() -> int:
    """PARTITION_MONTHS_AHEAD: months premade after the current one."""
    return get_settings().partition_months_ahead


def months_behind(conn: Connection, today: date | None = None) -> int:
    """PARTITION_MONTHS_BEHIND when set; by default, enough months back to
    hold a message as old as the longest room retention in use (older rows
    are purged anyway), and never fewer than MIN_MONTHS_BEHIND."""
    configured = get_settings().partition_months_behind
    if configured is not None:
        return configured
    longest_days = conn.execute(
        text("SELECT COALESCE(max(message_retention_days), 0) FROM rooms")
    ).scalar_one()
    today = today or datetime.now(UTC).date()
    oldest_kept = month_of(today - timedelta(days=longest_days))
    return max(MIN_MONTHS_BEHIND, months_between(oldest_kept, month_of(today)))


def ensure_monthly_partitions(
    conn: Connection, today: date | None = None, behind: int | None = None, ahead: int | None = None
) -> list[str]:
    """Create every missing partition of the window around `today`'s month
    (default: now, in UTC), for every partitioned table; returns the names
    created."""
    current = month_of(today or datetime.now(UTC))
    behind = months_behind(conn, current) if behind is None else behind
    ahead = months_ahead() if ahead is None else ahead
    first = add_months(current, -behind)
    return [
        name
        for table in PARTITIONED_TABLES
        for name in create_monthly_partitions(conn, table, first, behind + 1 + ahead)
    ]


def create_monthly_partitions(
    conn: Connection, table: str, first_month: date, months: int
) -> list[str]:
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
    return table.group(1), month_of(moment)


def _aware_timestamp(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def creating_missing_partitions(transaction: Callable[[], T], attempts: int = 3) -> T:
    """Run `transaction` (a callable that opens and commits a transaction
    of its own). If PostgreSQL refused a row because its month has no
    partition, create that month in a transaction of its own and run
    `transaction` again. Any other error, or the same one after `attempts`
    tries (a batch may span months), propagates.

    Every writer that may meet an old or far-future date goes through
    this: the API, restore, imports."""
    for attempt in range(1, attempts + 1):
        try:
            return transaction()
        except sa_exc.IntegrityError as exc:
            missing = missing_partition(exc.orig)
            if missing is None or attempt == attempts:
                raise
            table, month = missing
            with get_engine().begin() as conn:
                create_monthly_partitions(conn, table, month, 1)
    raise AssertionError("unreachable")


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter: partitions are made at run time, not modelled."""
    if type_ == "table":
        return not PARTITION_NAME.match(name or "")
    if type_ == "foreign_key_constraint":
        # PostgreSQL clones a reference to a partitioned table into one
        # internal constraint per partition.
        return not PARTITION_NAME.match(obj.referred_table.name)
    return True
