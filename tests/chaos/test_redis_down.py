"""The transactional outbox end to end: with Redis stopped, writes still
answer 2xx, and every piece of work they owe runs once Redis is back.

Uses its own redis-server (no persistence) on a free port, so stopping it
disturbs nobody else, and its own relay and worker pointed at it.
"""

from __future__ import annotations

import pytest
import redis

from tests.conftest import wait_for
from tests.processes import free_port, start_redis, start_relay_on, start_worker_on

pytestmark = pytest.mark.slow

WRITES = 200


@pytest.fixture
def private_redis():
    port = free_port()
    procs = {"redis": start_redis(port)}
    procs["relay"] = start_relay_on(port, "outbox-relay")
    procs["worker"] = start_worker_on(port, "outbox-worker")
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
    wait_for(
        lambda: redis.Redis(port=port).hlen("unacked") == 0,
        timeout=30,
        what="the warm-up message to be acknowledged",
    )

    procs["redis"].stop()
    statuses = [
        api.post(f"/rooms/{room}/messages", alice, json={"content": f"m{i}"}).status_code
        for i in range(WRITES)
    ]
    assert statuses == [201] * WRITES
    assert started(db) == 1
    assert db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone() == (WRITES,)

    procs["redis"] = start_redis(port)
    wait_for(
        lambda: started(db) == WRITES + 1,
        timeout=120,
        what=f"all {WRITES} tasks to start after Redis came back",
    )
    # ...and they did their work: the author's recount covers every message.
    count = "SELECT message_count FROM room_members WHERE user_id = %s"
    wait_for(
        lambda: db.execute(count, (alice.id,)).fetchone() == (WRITES + 1,),
        timeout=30,
        what="the recount to include every message",
    )
