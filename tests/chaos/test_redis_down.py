"""The transactional outbox end to end: with Redis stopped, writes still
answer 2xx, and every piece of work they owe runs once Redis is back.

Uses its own redis-server (no persistence) on a free port, so stopping it
disturbs nobody else, and its own relay and worker pointed at it.
"""

from __future__ import annotations

import socket
import sys

import pytest
import redis

from tests.api_helpers import api, app  # noqa: F401  (fixtures)
from tests.conftest import ManagedProcess, wait_for

WRITES = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(port: int) -> ManagedProcess:
    proc = ManagedProcess("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no"]).start()
    client = redis.Redis(port=port)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(answers, timeout=10, what="redis-server to answer")
    return proc


def celery_worker(env: dict[str, str]) -> ManagedProcess:
    return ManagedProcess("outbox-worker", [
        sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "default",
        "-c", "2", "-n", f"outbox-{free_port()}@%h", "--without-mingle", "--without-gossip",
        "-l", "INFO"], env).start()


@pytest.fixture
def private_redis():
    port = free_port()
    procs = {"redis": start_redis(port)}
    env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    procs["relay"] = ManagedProcess("outbox-relay", [sys.executable, "-m", "worker.cli", "relay"],
                                    env).start()
    procs["worker"] = celery_worker(env)
    yield port, procs
    for proc in procs.values():
        proc.stop()


def started(db) -> int:
    return db.execute("SELECT count(*) FROM outbox WHERE started_at IS NOT NULL").fetchone()[0]


def test_writes_succeed_while_redis_is_down_and_their_work_runs_after(api, db, private_redis):
    port, procs = private_redis
    alice = api.register()
    room = api.room(alice)
    api.say(room, alice, "warm-up: proves the relay and worker are wired to this Redis")
    wait_for(lambda: started(db) == 1, timeout=60, what="the warm-up task to start")
    # Stopped only once the warm-up is acknowledged: kombu 5.7's worker dies
    # ("Unrecoverable error", in Channel.close) when Redis goes away while it
    # holds an unacknowledged message, which is not what this test is about.
    wait_for(lambda: redis.Redis(port=port).hlen("unacked") == 0, timeout=30,
             what="the warm-up message to be acknowledged")

    procs["redis"].stop()
    statuses = [api.post(f"/rooms/{room}/messages", alice, json={"content": f"m{i}"}).status_code
                for i in range(WRITES)]
    assert statuses == [201] * WRITES
    assert started(db) == 1
    assert db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone() == (WRITES,)

    procs["redis"] = start_redis(port)
    wait_for(lambda: started(db) == WRITES + 1, timeout=120,
             what=f"all {WRITES} tasks to start after Redis came back")
    # ...and they did their work: the author's recount covers every message.
    count = "SELECT message_count FROM room_members WHERE user_id = %s"
    wait_for(lambda: db.execute(count, (alice.id,)).fetchone() == (WRITES + 1,), timeout=30,
             what="the recount to include every message")
