"""Test harness: a real PostgreSQL database, a real Redis, real Celery
worker and outbox relay processes.

Each pytest run gets its own database (veza_test_<pid>) and storage
directory, and a Redis database number (VEZA_TEST_REDIS_DB, default 15)
that it flushes, so that runs on one machine do not steal each other's
tasks. The test environment is set here, and the settings (veza/settings.py)
are then built from it; the processes the tests start inherit it. A test
that changes a variable in-process uses the `environment` fixture, which
rebuilds the settings.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from graphlib import TopologicalSorter
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("VEZA_TEST_ADMIN_URL", "postgresql://veza:veza@127.0.0.1:5432/postgres")
TEST_DB = f"veza_test_{os.getpid()}"
REDIS_BASE = os.environ.get("VEZA_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("VEZA_TEST_REDIS_DB", "15"))

os.environ["DATABASE_URL"] = ADMIN_URL.rsplit("/", 1)[0] + "/" + TEST_DB
os.environ["REDIS_URL"] = f"{REDIS_BASE}/{REDIS_DB}"
os.environ["STORAGE_DIR"] = tempfile.mkdtemp(prefix="veza-storage-")
os.environ.setdefault("LOG_LEVEL", "INFO")
# Still argon2id, with cheap parameters: the suite registers many users.
os.environ.setdefault("ARGON2_TIME_COST", "1")
os.environ.setdefault("ARGON2_MEMORY_KIB", "8192")
# A key of this run's own, for the 2FA secrets (veza/two_factor.py).
os.environ.setdefault("TOTP_ENCRYPTION_KEY", Fernet.generate_key().decode())
# The suite registers and logs in many users from one address: the rate
# limits are off unless a test turns them on (tests/test_rate_limits.py).
os.environ.setdefault("RATE_LIMIT_ENABLED", "false")
from tests.clamav import clamd_server  # noqa: E402,F401  (sets CLAMD_SOCKET; the clamd fixture)
from veza.settings import reload_settings  # noqa: E402

reload_settings()  # the settings, from the test environment above

# Every table the tests may write, emptied between tests that ask for `db`
# (with every table that references one of them: emptying_order()).
TABLES = (
    "users, rooms, room_members, direct_conversations, direct_conversation_participants, "
    "messages, message_mentions, reactions, files, audit_logs, user_sessions, outbox, "
    "maintenance_runs, image_blocklist"
)
# Above this many rows in a table, one TRUNCATE of them all is cheaper than
# DELETE, whose row triggers (the counters) cost a few ms per row.
DELETE_AT_MOST = 2000


@pytest.fixture
def environment():
    """`environment(NAME="value", OTHER=None)` sets (None: removes)
    variables for one test and rebuilds the settings from them; both are
    undone when the test ends."""
    patch = pytest.MonkeyPatch()

    def change(**variables: str | None) -> None:
        for name, value in variables.items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        reload_settings()

    yield change
    patch.undo()
    reload_settings()


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def alembic(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", *args], cwd=ROOT, check=True, capture_output=True
    )


@pytest.fixture(scope="session")
def database_url() -> str:
    _admin(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{TEST_DB}"')
    alembic("upgrade", "head")
    yield os.environ["DATABASE_URL"]
    from db.engine import get_engine

    get_engine().dispose()
    _admin(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
    shutil.rmtree(os.environ["STORAGE_DIR"], ignore_errors=True)


def drop_far_partitions(conn) -> None:
    """Drop the (emptied) partitions more than a year from this month: the
    ones the calendar tests make for the days they choose (2030, 2081...).
    TRUNCATE goes through every partition, so as they piled up each test's
    `db` took longer, to seconds by the end of a run. Detached first: a
    partition of messages cannot be dropped while other tables' foreign
    keys reference messages."""
    from db.partitions import PARTITION_NAME, PARTITIONED_TABLES, add_months, this_month

    nearest, furthest = add_months(this_month(), -13), add_months(this_month(), 12)

    def is_far(name: str) -> bool:
        named = PARTITION_NAME.match(name)
        return bool(named) and not nearest <= date(int(named[2]), int(named[3]), 1) <= furthest

    partitions = conn.execute(
        "SELECT i.inhparent::regclass::text, c.relname FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = ANY(CAST(%s AS regclass[]))",
        (list(PARTITIONED_TABLES),),
    ).fetchall()
    for parent, name in partitions:
        if is_far(name):
            conn.execute(
                sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                    sql.Identifier(parent), sql.Identifier(name)
                )
            )
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


@functools.cache
def emptying_order(database_url: str) -> tuple[str, ...]:
    """TABLES and every table that references one of them, each after
    the tables that reference it (partitions go with their parent)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "WITH RECURSIVE t(oid) AS ("
            "  SELECT unnest(CAST(string_to_array(replace(%s, ' ', ''), ',') AS regclass[]))::oid"
            "  UNION SELECT c.conrelid FROM pg_constraint c JOIN t ON c.confrelid = t.oid"
            "  WHERE c.contype = 'f')"
            " SELECT t.oid::regclass::text, coalesce(array_agg(DISTINCT c.confrelid::regclass::text)"
            "  FILTER (WHERE c.confrelid <> t.oid), '{}')"
            " FROM t JOIN pg_class k ON k.oid = t.oid AND NOT k.relispartition"
            " LEFT JOIN pg_constraint c ON c.conrelid = t.oid AND c.contype = 'f' GROUP BY 1",
            (TABLES,),
        ).fetchall()
    tables = {table for table, _ in rows}
    graph = {table: set(referenced) & tables for table, referenced in rows}
    return tuple(reversed(list(TopologicalSorter(graph).static_order())))


def empty_tables(conn) -> None:
    """Empty TABLES and what references them, with their sequences reset.
    A TRUNCATE of them all rewrites about 300 relations (every partition
    and index), about half a second; a test writes a few rows in a few
    tables, so those are DELETEd instead, unless one holds many rows."""
    from db.engine import libpq_url

    order = emptying_order(libpq_url())
    sizes = dict(
        conn.execute(
            sql.SQL(" UNION ALL ").join(
                sql.SQL(
                    "SELECT {name}, (SELECT count(*) FROM (SELECT FROM {table} LIMIT {cap}) s)"
                ).format(
                    name=sql.Literal(table),
                    table=sql.Identifier(table),
                    cap=sql.Literal(DELETE_AT_MOST + 1),
                )
                for table in order
            )
        ).fetchall()
    )
    if max(sizes.values()) > DELETE_AT_MOST:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        return
    with conn.transaction():
        for table in order:
            if sizes[table]:
                conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        # RESTART IDENTITY: the sequences these tables own start again.
        conn.execute(
            "SELECT setval(d.objid::regclass, q.seqstart, false) FROM pg_depend d"
            " JOIN pg_sequence q ON q.seqrelid = d.objid WHERE d.classid = 'pg_class'::regclass"
            " AND d.deptype IN ('a', 'i') AND d.refobjid = ANY(CAST(%s AS regclass[]))",
            (list(order),),
        )


@pytest.fixture
def db(database_url):
    """A migrated database with every table empty; yields a raw autocommit
    psycopg connection for direct SQL."""
    from db.engine import libpq_url

    with psycopg.connect(libpq_url(), autocommit=True) as conn:
        empty_tables(conn)
        drop_far_partitions(conn)
        yield conn


@pytest.fixture(scope="session")
def redis_client():
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.flushdb()
    yield client
    client.flushdb()


# The logs of the processes the tests start, one directory a run (see
# pytest_sessionfinish below).
LOG_DIR = Path(tempfile.mkdtemp(prefix="veza-logs-"))


class ManagedProcess:
    """A real child process (worker, relay, API server) with its log kept
    in a file, so that a failing test can show what the process said."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        fd, log_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=LOG_DIR)
        os.close(fd)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    def start(self) -> ManagedProcess:
        self.log = open(self.log_path, "ab")  # noqa: SIM115  (kept open until stop())
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def purge_queues(queues: str) -> None:
    """Empty the comma-separated queues (no worker should be on them)."""
    from worker import app

    with app.connection_for_write() as connection:
        for queue in queues.split(","):
            connection.default_channel.queue_purge(queue)


def start_worker(
    name: str = "worker",
    queues: str = "default,files,scan,maintenance",
    concurrency: int = 2,
    env: dict[str, str] | None = None,
    purge: bool = True,
) -> ManagedProcess:
    """Start a real Celery worker and wait until it answers a ping. Unless
    told to take over what is queued, its queues are emptied first: a message
    an earlier test left behind (the rest of a chain whose worker it stopped)
    must not run in this one."""
    from tests.processes import worker_argv
    from worker import app

    if purge:
        purge_queues(queues)

    hostname = f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h"
    proc = ManagedProcess(name, worker_argv(queues, concurrency, hostname), env).start()
    wanted = hostname.split("@")[0]

    def answered() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{proc.output()}")
        replies = app.control.ping(timeout=0.5) or []
        return any(wanted in host for reply in replies for host in reply)

    wait_for(answered, timeout=60, what=f"worker {name} to answer a ping")
    return proc


def start_relay() -> ManagedProcess:
    return ManagedProcess("relay", [sys.executable, "-m", "worker.cli", "relay"]).start()


@pytest.fixture(scope="session")
def celery_worker(database_url, redis_client):
    """A worker on the `default` queue only (heartbeat, message tasks).
    Tests of files and maintenance start their own workers, with their own
    settings, so that this one never takes their tasks."""
    proc = start_worker(queues="default")
    yield proc
    proc.stop()


@pytest.fixture
def relay(database_url, redis_client):
    """Per test: a session-long relay would publish what later tests put in
    the outbox without wanting it run."""
    proc = start_relay()
    yield proc
    proc.stop()


# Fixtures kept beside the helpers they go with, for every test module:
# `app` and `api` (tests/api_helpers.py), `mdb` (tests/maintenance_helpers.py).
pytest_plugins = ["tests.api_helpers", "tests.maintenance_helpers", "tests.seaweedfs"]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """After the last fixture's teardown (clamd, workers and relays are
    stopped by then), the run's temporary directories go: clamd's is made
    at import whether a test used clamd or not. The processes' logs stay
    when a test failed, to be read (the summary names the directory)."""
    from tests.clamav import CLAMD_DIR

    shutil.rmtree(CLAMD_DIR, ignore_errors=True)
    shutil.rmtree(os.environ["STORAGE_DIR"], ignore_errors=True)
    if not session.testsfailed:
        shutil.rmtree(LOG_DIR, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    if LOG_DIR.exists():
        terminalreporter.write_line(f"logs of the processes the tests started: {LOG_DIR}")
