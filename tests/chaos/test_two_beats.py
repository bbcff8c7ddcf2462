"""Chaos: two beat processes. Each schedule fires once per period, and when
the beat holding the lock dies the other takes over."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from tests.conftest import ManagedProcess, wait_for

pytestmark = pytest.mark.slow

PERIOD = 2.0
LOCK_TIMEOUT = 6
ACQUIRED = "beat: Acquired lock"  # redbeat's log line when a beat takes the lock


def heartbeat_runs(worker_log: str, since: float) -> int:
    runs = 0
    for line in worker_log.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if (
            record.get("logger") == "celery.app.trace"
            and record["message"].startswith("Task system.heartbeat[")
            and " succeeded in " in record["message"]
            and _epoch(record["time"]) >= since
        ):
            runs += 1
    return runs


def _epoch(stamp: str) -> float:
    return time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S"))


def start_beat(name: str) -> ManagedProcess:
    return ManagedProcess(
        name,
        [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO"],
        env={
            "VEZA_SCHEDULE_HEARTBEAT": str(PERIOD),
            "BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
            "TZ": "UTC",
        },
    ).start()


@pytest.mark.timeout(180)
def test_two_beats_fire_each_schedule_once_and_fail_over(celery_worker, redis_client):
    for key in redis_client.scan_iter("redbeat*"):
        redis_client.delete(key)
    first, second = start_beat("beat-a"), start_beat("beat-b")
    try:
        since = time.time() + 1
        time.sleep(1 + 8 * PERIOD)
        both = heartbeat_runs(celery_worker.output(), since)
        # One beat fires ~8 times in 8 periods; two unlocked beats would
        # fire ~16. Allow a period of jitter at each end.
        assert 5 <= both <= 10, f"{both} heartbeats in 8 periods with two beats"

        holders = [beat for beat in (first, second) if ACQUIRED in beat.output()]
        assert len(holders) == 1, "exactly one beat holds the lock before the kill"
        [holder] = holders
        standby = second if holder is first else first
        standby_log_at_kill = len(standby.output())
        os.killpg(holder.proc.pid, signal.SIGKILL)
        since = time.time()
        wait_for(
            lambda: heartbeat_runs(celery_worker.output(), since + LOCK_TIMEOUT) >= 3,
            timeout=LOCK_TIMEOUT + 10 * PERIOD,
            what="the standby beat to take over",
        )
        # The heartbeats after the kill are the standby's: it took the lock
        # only now, so they are a fail-over, not the old holder's leftovers.
        assert ACQUIRED in standby.output()[standby_log_at_kill:]
    finally:
        first.stop()
        second.stop()
