"""What every database session of the project is: UTC whatever the
environment and the database say, and bounded in time by the kind of work
it does (db/engine.py); and a missing partition is found for the right
month whatever the session's zone."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime

import psycopg
import pytest
from psycopg import errors as pg_errors

from tests.conftest import ADMIN_URL, ROOT, _admin, wait_for

BOUND_SETTINGS = (
    "SELECT setting::int FROM pg_settings "
    "WHERE name IN ('statement_timeout', 'idle_in_transaction_session_timeout') ORDER BY name DESC"
)


@pytest.fixture
def zoned_database():
    """A database whose default TimeZone is not UTC."""
    name = f"veza_test_{os.getpid()}_zoned"
    _admin(f'DROP DATABASE IF EXISTS "{name}"')
    _admin(f'CREATE DATABASE "{name}"')
    _admin(f"""ALTER DATABASE "{name}" SET timezone TO 'Pacific/Kiritimati'""")
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SHOW_ZONES = """
import os, psycopg
from sqlalchemy import text
plain = os.environ["DATABASE_URL"]
with psycopg.connect(plain) as conn:            # PGTZ as libpq sends it
    print(conn.execute("SHOW TimeZone").fetchone()[0])
from db.engine import libpq_url, session_scope
with psycopg.connect(plain) as conn:            # the database's default
    print(conn.execute("SHOW TimeZone").fetchone()[0])
with psycopg.connect(libpq_url()) as conn:
    print(conn.execute("SHOW TimeZone").fetchone()[0])
with session_scope() as session:
    print(session.execute(text("SHOW TimeZone")).scalar())
"""


def test_project_connections_are_utc_whatever_pgtz_and_the_database_default(zoned_database):
    env = {**os.environ, "DATABASE_URL": zoned_database, "PGTZ": "America/New_York"}
    shown = subprocess.run(
        [sys.executable, "-c", SHOW_ZONES],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    # The first two are connections made without the project's options.
    assert shown == ["America/New_York", "Pacific/Kiritimati", "UTC", "UTC"]


@pytest.mark.parametrize("kind", ["api", "relay", "worker", "maintenance"])
def test_each_kind_of_work_connects_with_its_bounds(database_url, kind):
    from sqlalchemy import text

    from db.engine import bounds, libpq_url, session_scope, set_kind

    expected = bounds(kind)
    wanted = [expected.statement_timeout_ms, expected.idle_in_transaction_timeout_ms]
    previous = set_kind(kind)
    try:
        with psycopg.connect(libpq_url()) as conn:
            assert [r[0] for r in conn.execute(BOUND_SETTINGS)] == wanted
            assert conn.info.get_parameters()["connect_timeout"] == str(
                expected.connect_timeout_seconds
            )
        with session_scope() as session:
            assert list(session.execute(text(BOUND_SETTINGS)).scalars()) == wanted
    finally:
        set_kind(previous)


def test_a_bound_is_set_from_the_environment(database_url, environment):
    from db.engine import libpq_url

    environment(DB_STATEMENT_TIMEOUT_MS_RELAY="1234", DB_IDLE_IN_TRANSACTION_TIMEOUT_MS_RELAY="0")
    with psycopg.connect(libpq_url(kind="relay")) as conn:
        assert [r[0] for r in conn.execute(BOUND_SETTINGS)] == [1234, 0]


def test_the_default_bounds_end_before_the_time_limits_they_serve():
    """A task must meet a database error it retries (a timeout), never its
    soft time limit, which is not retried."""
    from db.engine import DEFAULT_BOUNDS
    from veza import limits

    worker, maintenance = DEFAULT_BOUNDS["worker"], DEFAULT_BOUNDS["maintenance"]
    shortest_soft = min(
        limits.DEFAULT_TIME_LIMITS[0], limits.FILE_TIME_LIMITS[0], limits.SCAN_TIME_LIMITS[0]
    )
    assert worker.statement_timeout_ms < shortest_soft * 1000
    assert 2 * worker.connect_timeout_seconds < shortest_soft / 4
    assert maintenance.statement_timeout_ms < limits.MAINTENANCE_TIME_LIMITS[0] * 1000


SLEEP_IN_THE_DATABASE = """
from sqlalchemy import text
from db.engine import session_scope
with session_scope() as session:
    session.execute(text("SELECT pg_sleep(120) /* veza: killed mid-statement */"))
"""


def test_a_killed_processs_statement_ends_at_its_statement_timeout(db):
    """A worker killed at its hard time limit leaves its backend running the
    statement (PostgreSQL notices the dead client only when it next writes
    to it); statement_timeout is what ends it."""
    running = (
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%killed mid-statement%'"
        " AND state = 'active' AND pid <> pg_backend_pid()"
    )
    env = {**os.environ, "DB_STATEMENT_TIMEOUT_MS_WORKER": "3000"}
    proc = subprocess.Popen([sys.executable, "-c", SLEEP_IN_THE_DATABASE], cwd=ROOT, env=env)
    try:
        wait_for(
            lambda: db.execute(running).fetchone()[0] == 1,
            timeout=30,
            what="the statement to start",
        )
    finally:
        proc.kill()
        proc.wait()
    wait_for(
        lambda: db.execute(running).fetchone()[0] == 0,
        timeout=30,
        what="the killed process's statement to end (it would run 120 s unbounded)",
    )


# (session TimeZone, the row's instant, the UTC month its partition covers).
# Each instant's local date is in another month than its UTC date.
BOUNDARY_ROWS = [
    ("America/New_York", datetime(2001, 12, 1, 3, tzinfo=UTC), date(2001, 12, 1)),
    ("Pacific/Kiritimati", datetime(2001, 11, 30, 12, tzinfo=UTC), date(2001, 11, 1)),
    ("Pacific/Kiritimati", datetime(2001, 12, 31, 20, tzinfo=UTC), date(2001, 12, 1)),
    ("America/New_York", datetime(2002, 1, 1, 2, tzinfo=UTC), date(2002, 1, 1)),
    ("Asia/Kathmandu", datetime(2001, 11, 30, 18, 30, tzinfo=UTC), date(2001, 11, 1)),
]


@pytest.mark.parametrize(("zone", "created_at", "month"), BOUNDARY_ROWS)
def test_a_missing_partition_is_found_for_the_rows_utc_month_in_any_session_zone(
    db, zone, created_at, month
):
    from sqlalchemy import text

    from db.engine import get_engine
    from db.partitions import create_monthly_partitions, missing_partition, partition_name

    insert = "INSERT INTO audit_logs (event_type, event_data, created_at) VALUES ('t', '{}', %s)"
    db.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
    with pytest.raises(pg_errors.CheckViolation) as refused:
        db.execute(insert, (created_at,))
    assert missing_partition(refused.value) == ("audit_logs", month)
    try:
        with get_engine().begin() as conn:
            create_monthly_partitions(conn, "audit_logs", month, 1)
        db.execute(insert, (created_at,))  # the row lands in the partition made for it
        assert db.execute("SELECT tableoid::regclass::text FROM audit_logs").fetchone() == (
            partition_name("audit_logs", month),
        )
    finally:
        with get_engine().begin() as conn:
            conn.execute(text(f'DROP TABLE IF EXISTS "{partition_name("audit_logs", month)}"'))
