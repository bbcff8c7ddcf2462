"""Chaos: the broker fails over. A primary, a replica and three Sentinels of
the test's own (redis-server, `--sentinel` mode for these), with passwords
on both, so each goes where it belongs (the URL's to the primary,
REDIS_SENTINEL_PASSWORD to the Sentinels). A relay, a worker and a beat
find the primary through the Sentinels (REDIS_URL=sentinel://...). Writes
go on through the API while the primary is SIGKILLed: the Sentinels
promote the replica within seconds, every process finds the new primary
through them, and the work of every write finishes, nothing lost.

What the old primary took with it (what replication had not copied yet,
the messages in flight) is sent again by maintenance.redrive_outbox, which
beat schedules every second here through the new primary (redbeat's lock
follows the primary: it is a key, replicated like the others).

Prints the failover's figures: how long the Sentinels took, how long until
the first work written after the kill finished (the time to recover), and
the work lost (none)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import redis

from tests.conftest import ManagedProcess, wait_for
from tests.maintenance_helpers import counter_mismatches
from tests.processes import free_port, start_redis, worker_argv

pytestmark = pytest.mark.slow

MASTER = "veza-failover"
DATA_PASSWORD = "data-secret"  # the primary's and the replica's
SENTINEL_PASSWORD = "sentinel-secret"  # the Sentinels' own
SENTINELS = 3
# The primary counts as down after this long without an answer, and a
# failover that stalls is tried again after failover-timeout: seconds, not
# Redis's default 30 s and 3 min.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
WRITE_SECONDS = 12
KILL_AFTER_SECONDS = 3
REDRIVE_AFTER_SECONDS = 3


@dataclass
class Group:
    """The test's primary, replica and Sentinels, and the REDIS_URL of them."""

    primary: ManagedProcess
    replica_port: int
    sentinel_ports: list[int]
    url: str

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[index], password=SENTINEL_PASSWORD)

    def primary_address(self) -> tuple[str, int] | None:
        """Where the first Sentinel says the primary is."""
        found = self.sentinel().sentinel_get_master_addr_by_name(MASTER)
        return (found[0].decode(), int(found[1])) if found else None


def sentinel_conf(directory: Path, port: int, primary_port: int) -> Path:
    """A Sentinel's configuration file (a Sentinel rewrites its own: one
    file each, in the test's directory)."""
    conf = directory / f"sentinel-{port}.conf"
    conf.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {directory}\n"
        f"requirepass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f"sentinel auth-pass {MASTER} {DATA_PASSWORD}\n"
        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
    )
    return conf


def ready(group: Group) -> bool:
    """Every Sentinel sees the primary, the replica and the two others, and
    the replica is in sync: a failover can happen."""
    for index in range(SENTINELS):
        try:
            state = group.sentinel(index).sentinel_master(MASTER)
        except redis.RedisError:
            return False
        if state["num-slaves"] < 1 or state["num-other-sentinels"] < SENTINELS - 1:
            return False
    replica = redis.Redis(port=group.replica_port, password=DATA_PASSWORD)
    return replica.info("replication").get("master_link_status") == "up"


@pytest.fixture
def group(tmp_path):
    procs: list[ManagedProcess] = []
    try:
        primary_port, replica_port = free_port(), free_port()
        # In the test's directory: a replica writes the primary's snapshot
        # to disk as it syncs (dump.rdb), even without persistence.
        both = ("--dir", str(tmp_path), "--masterauth", DATA_PASSWORD)
        primary = start_redis(primary_port, *both, password=DATA_PASSWORD)
        procs.append(primary)
        replica = ("--replicaof", "127.0.0.1", str(primary_port), "--dbfilename", "replica.rdb")
        procs.append(start_redis(replica_port, *both, *replica, password=DATA_PASSWORD))
        sentinel_ports = [free_port() for _ in range(SENTINELS)]
        for port in sentinel_ports:
            conf = sentinel_conf(tmp_path, port, primary_port)
            procs.append(ManagedProcess("sentinel", ["redis-server", str(conf), "--sentinel"]))
            procs[-1].start()
        url = ";".join(f"sentinel://:{DATA_PASSWORD}@127.0.0.1:{port}/0" for port in sentinel_ports)
        found = Group(primary, replica_port, sentinel_ports, url)
        wait_for(lambda: ready(found), timeout=30, what="the Sentinels to see the whole group")
        yield found
    finally:
        for proc in reversed(procs):
            proc.stop()


def on_sentinels(group: Group) -> dict[str, str]:
    """The environment of a process of ours that finds Redis through `group`."""
    return {
        "REDIS_URL": group.url,
        "REDIS_SENTINEL_MASTER": MASTER,
        "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "OUTBOX_REDRIVE_AFTER_SECONDS": str(REDRIVE_AFTER_SECONDS),
        "VEZA_SCHEDULE_REDRIVE_OUTBOX": "1",
    }


class Supervised(ManagedProcess):
    """A process under scripts/respawn, as the Procfile runs each one: a
    Celery worker that loses its broker while it holds an unacknowledged
    message exits ("Unrecoverable error" in kombu 5.7's Channel.close, as
    with one Redis: tests/chaos/test_redis_down.py), and is started again.
    Stopped as honcho stops it: SIGTERM to its whole group (respawn and the
    command), then SIGKILL after a bounded wait."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        super().__init__(name, ["scripts/respawn", *argv], env)

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def restarts(self) -> int:
        return self.output().count("respawn: ")


@pytest.fixture
def system(group):
    """A relay, a worker (messages and maintenance) and a beat, all on `group`."""
    env = on_sentinels(group)
    procs = [
        Supervised("failover-relay", [sys.executable, "-m", "worker.cli", "relay"], env),
        Supervised("failover-worker", worker_argv("default,maintenance", 2, "failover@%h"), env),
        Supervised("failover-beat", [sys.executable, "-m", "celery", "-A", "worker", "beat"], env),
    ]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()


class OurClients:
    """Every other client of Redis we have, made once, as a process makes
    them: the API's health probe, the rate limits' storage, our own keys
    (the exporter's queue depths, the heartbeat, redelivery counts)."""

    def __init__(self) -> None:
        from limits.storage import storage_from_string

        from api import create_app
        from api.rate_limits import storage
        from veza.redis_store import redis_client
        from veza.settings import get_settings

        self.health = create_app({"TESTING": True}).test_client()
        uri, options = storage(get_settings().redis_url)
        self.rate_limits = storage_from_string(uri, **options)
        self.keys = redis_client()

    def answer(self) -> bool:
        from worker.metrics import queue_depth

        return (
            self.health.get("/healthz").json["checks"]["redis"] == "ok"
            and self.rate_limits.check()
            and queue_depth(self.keys, "default") >= 0
        )


def count(db, sql: str, *params: object) -> int:
    return db.execute(sql, params).fetchone()[0]


def unfinished(db) -> int:
    return count(db, "SELECT count(*) FROM outbox WHERE finished_at IS NULL")


def watch_promotion(group: Group, since: float, promoted: list[float]) -> threading.Thread:
    """Record (seconds after `since`) when the Sentinels name a new primary."""
    old = group.primary_address()

    def watch() -> None:
        deadline = since + 60
        while time.monotonic() < deadline:
            try:
                now = group.primary_address()
            except redis.RedisError:
                now = old
            if now != old:
                promoted.append(time.monotonic() - since)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(300)
def test_the_primary_killed_during_writes_fails_over_and_no_work_is_lost(
    api, db, group, system, environment
):
    # This process's own clients of Redis find it through the Sentinels too.
    # (`api`'s app, made before, writes only to PostgreSQL: the outbox.)
    environment(**on_sentinels(group))
    ours = OurClients()
    assert ours.answer()

    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    api.say(room, alice, "warm-up: the relay and the worker are on the Sentinels' primary")
    wait_for(lambda: unfinished(db) == 0, timeout=90, what="the warm-up's work to finish")

    posts, killed_at, promoted = 0, None, []
    started = time.monotonic()
    while time.monotonic() - started < WRITE_SECONDS:
        if killed_at is None and time.monotonic() - started >= KILL_AFTER_SECONDS:
            watcher = watch_promotion(group, time.monotonic(), promoted)
            os.kill(group.primary.proc.pid, signal.SIGKILL)
            killed_at = db.execute("SELECT clock_timestamp()").fetchone()[0]
        author = (alice, bob)[posts % 2]
        response = api.post(f"/rooms/{room}/messages", author, json={"content": f"m{posts}"})
        assert response.status_code == 201, response.json
        posts += 1
        time.sleep(0.02)
    assert killed_at is not None
    watcher.join(timeout=60)
    assert promoted, "the Sentinels never named a new primary"
    assert group.primary_address() == ("127.0.0.1", group.replica_port)

    # The figures are printed whether or not everything finished in time.
    with contextlib.suppress(AssertionError):
        wait_for(lambda: unfinished(db) == 0, timeout=150, what="every row's work to finish")
    recovered: datetime | None = db.execute(
        "SELECT min(finished_at) FROM outbox WHERE created_at > %s", (killed_at,)
    ).fetchone()[0]
    lost = unfinished(db)
    redriven = count(db, "SELECT count(*) FROM outbox WHERE redrives > 0")
    restarts = {proc.name: proc.restarts() for proc in system}
    recovery = f"{(recovered - killed_at).total_seconds():.1f} s" if recovered else "never"
    print(
        f"\nfailover: {posts} posts over {WRITE_SECONDS} s, primary SIGKILLed at"
        f" {KILL_AFTER_SECONDS} s; Sentinels named the replica after {promoted[0]:.1f} s;"
        f" time to recover (kill -> first work written after it finished): {recovery};"
        f" rows re-driven: {redriven}; processes restarted by respawn: {restarts};"
        f" work lost: {lost}"
    )
    assert lost == 0, f"{lost} outbox rows' work never finished"
    # Nothing lost shows in the data too: every counter messages.index keeps is right.
    assert count(db, "SELECT count(*) FROM messages") == posts + 1
    assert counter_mismatches(db) == []

    # The system is whole on the new primary: beat holds its lock there and
    # still schedules (a re-drive run started after the kill), and the
    # clients of this process that were made before the kill use it.
    wait_for(
        lambda: count(
            db,
            "SELECT count(*) FROM maintenance_runs"
            " WHERE task_name = 'maintenance.redrive_outbox' AND started_at > %s",
            killed_at,
        ),
        timeout=30,
        what="a re-drive scheduled by beat after the failover",
    )
    new_primary = redis.Redis(port=group.replica_port, password=DATA_PASSWORD)
    assert new_primary.exists("redbeat::lock")
    assert ours.answer()
    for proc in system:
        assert proc.proc.poll() is None, f"{proc.name}'s respawn exited:\n{proc.output()[-3000:]}"
    # The relay and beat ride out the failover by themselves (their own
    # backoff); only a worker may have needed starting again.
    assert restarts["failover-relay"] == restarts["failover-beat"] == 0
