"""The calendar: partitions exist for the past as well as the future, month
boundaries are UTC boundaries whatever the session's zone, and nothing
depends on today's date. Boundary cases are pinned by computing from chosen
dates (the 1st, the last day of a month, 31 December to 1 January, a leap
day), far from today so that they never meet the partitions other tests
make around now."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from db.partitions import add_months, partition_name, this_month
from tests.conftest import alembic
from tests.factories import fresh_database, make_room, make_user, scalar
from tests.maintenance_helpers import run_task

# Each in a year of its own: one day's window must not see another's.
CHOSEN_DAYS = [
    date(2081, 3, 1),
    date(2083, 1, 31),
    date(2084, 2, 29),
    date(2085, 12, 31),
    date(2087, 1, 1),
]


def exists(db, name: str) -> bool:
    return scalar(db, "SELECT to_regclass(%s) IS NOT NULL", (name,))


@pytest.mark.parametrize("today", CHOSEN_DAYS, ids=str)
def test_the_window_runs_from_months_behind_to_months_ahead_of_a_chosen_day(db, today):
    run_task(
        "maintenance.ensure_partitions", today=today.isoformat(), months_behind=2, months_ahead=1
    )
    current = today.replace(day=1)
    for months in (-2, -1, 0, 1):
        for table in ("messages", "audit_logs"):
            assert exists(db, partition_name(table, add_months(current, months)))
    assert not exists(db, partition_name("messages", add_months(current, 2)))


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Pacific/Kiritimati", "Asia/Kolkata"])
def test_new_year_splits_at_midnight_utc_in_any_session_zone(db, zone):
    run_task("maintenance.ensure_partitions", today="2091-12-31", months_behind=0, months_ahead=1)
    owner = make_user(db, "owner")
    room = make_room(db, owner)
    db.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
    try:
        last_instant = datetime(2092, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)
        landed = {}
        for at in (last_instant, datetime(2092, 1, 1, tzinfo=UTC)):
            landed[at] = scalar(
                db,
                "INSERT INTO messages (room_id, author_id, content, created_at)"
                " VALUES (%s, %s, 'x', %s) RETURNING tableoid::regclass::text",
                (room, owner, at),
            )
    finally:
        db.execute("RESET TimeZone")
    assert list(landed.values()) == ["messages_y2091m12", "messages_y2092m01"]


def test_months_behind_covers_the_longest_retention_in_use(db, environment):
    from db.engine import get_engine
    from db.partitions import months_behind

    environment(PARTITION_MONTHS_BEHIND=None)
    with get_engine().connect() as conn:
        assert months_behind(conn, date(2092, 1, 1)) == 2  # no retention: the minimum
        owner = make_user(db, "owner")
        make_room(db, owner, "year", message_retention_days=400)
        # 400 days before 2092-01-01 is 2090-11-27: November 2090, 14 months back.
        assert months_behind(conn, date(2092, 1, 1)) == 14
        environment(PARTITION_MONTHS_BEHIND="5")
        assert months_behind(conn, date(2092, 1, 1)) == 5


@pytest.mark.slow
def test_a_freshly_migrated_database_accepts_yesterdays_rows_on_any_day():
    """Migrated today, a database takes a backfill dated up to two months
    back (on the 1st, yesterday is last month), and the window ahead."""
    with fresh_database("calendar") as url:
        alembic("upgrade", "head")
        with psycopg.connect(url, autocommit=True) as conn:
            made = {
                row[0]
                for row in conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'messages'::regclass"
                )
            }
            window = {partition_name("messages", add_months(this_month(), m)) for m in range(-2, 4)}
            assert made == window
            user = conn.execute(
                "INSERT INTO users (username, email, password_hash)"
                " VALUES ('old', 'old@example.com', 'x') RETURNING id"
            ).fetchone()[0]
            room = conn.execute(
                "INSERT INTO rooms (name, owner_id) VALUES ('r', %s) RETURNING id", (user,)
            ).fetchone()[0]
            for days in (1, 31, 40):
                conn.execute(
                    "INSERT INTO messages (room_id, author_id, content, created_at)"
                    " VALUES (%s, %s, 'backfill', now() - make_interval(days => %s))",
                    (room, user, days),
                )
                conn.execute(
                    "INSERT INTO audit_logs (event_type, event_data, created_at)"
                    " VALUES ('import', '{}', now() - make_interval(days => %s))",
                    (days,),
                )
