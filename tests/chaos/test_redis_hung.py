"""Chaos: Redis hangs (SIGSTOP: it accepts connections and never answers)
for 30 s while the API takes writes. The relay claims, commits, and only
then publishes, so no session of ours sits `idle in transaction` holding
row locks while a publish waits on the hung broker; the broker's socket
timeouts end each wait. After SIGCONT every write's work is done."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import wait_for
from tests.processes import free_port, start_redis, start_relay_on, start_worker_on

pytestmark = pytest.mark.slow

HUNG_SECONDS = 30
# Far above any transaction of ours (milliseconds), far below the broker's
# socket timeout that a publish inside a transaction would wait out.
IDLE_IN_TRANSACTION_BOUND = "2 seconds"

IDLE_IN_TRANSACTION = """
SELECT pid, application_name, now() - state_change, left(query, 200) FROM pg_stat_activity
WHERE datname = current_database() AND state LIKE 'idle in transaction%%'
  AND now() - state_change > %s::interval
"""


def count(db, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


@pytest.mark.timeout(300)
def test_a_hung_redis_leaves_no_session_idle_in_a_transaction(api, db):
    port = free_port()
    procs = {"redis": start_redis(port)}
    try:
        procs["relay"] = start_relay_on(port, "hung-relay")
        procs["worker"] = start_worker_on(port, "hung-worker")
        alice = api.register()
        room = api.room(alice)
        api.say(room, alice, "warm-up: the relay and the worker are wired to this Redis")
        wait_for(
            lambda: count(db, "SELECT count(*) FROM outbox WHERE finished_at IS NOT NULL"),
            timeout=60,
            what="the warm-up task to finish",
        )

        os.kill(procs["redis"].proc.pid, signal.SIGSTOP)
        offenders, posted = [], 1
        try:
            hung_until = time.monotonic() + HUNG_SECONDS
            while time.monotonic() < hung_until:
                assert (
                    api.post(
                        f"/rooms/{room}/messages", alice, json={"content": f"m{posted}"}
                    ).status_code
                    == 201
                )
                posted += 1
                offenders += db.execute(
                    IDLE_IN_TRANSACTION, (IDLE_IN_TRANSACTION_BOUND,)
                ).fetchall()
                time.sleep(0.2)
            # The relay did try: a publish timed out on the hung broker.
            assert count(db, "SELECT count(*) FROM outbox WHERE last_error IS NOT NULL") > 0
        finally:
            os.kill(procs["redis"].proc.pid, signal.SIGCONT)
        assert offenders == []

        wait_for(
            lambda: (
                count(db, "SELECT count(*) FROM outbox WHERE finished_at IS NOT NULL") == posted
            ),
            timeout=120,
            what="every write's work to be done after SIGCONT",
        )
        member = "SELECT message_count FROM room_members WHERE user_id = %s"
        assert db.execute(member, (alice.id,)).fetchone() == (posted,)
    finally:
        for proc in reversed(procs.values()):
            proc.stop()
