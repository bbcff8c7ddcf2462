"""Chaos: two beat processes. Each schedule fires once per period, and when
the beat holding the lock dies the other takes over."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from tests.conftest import ManagedProcess, wait_for

PERIOD = 2.0
LOCK_TIMEOUT = 6


def heartbeat_runs(worker_log: str, since: float) -> int:
    runs = 0
    for line in worker_log.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("logger") == "celery.app.trace" \
                and record["message"].startswith("Task system.heartbeat[") \
                and " succeeded in " in record["message"] and _epoch(record["time"]) >= since:
            runs += 1
    return runs


def _epoch(stamp: str) -> float:
    return time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S"))


def start_beat(name: str) -> ManagedProcess:
    return ManagedProcess(
        name,
        [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO"],
        env={"VEZA_SCHEDULE_HEARTBEAT": str(PERIOD), "BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
             "TZ": "UTC"},
    ).start()


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

        holder = first if "beat: Acquired lock" in first.output() else second
        standby = second if holder is first else first
        os.killpg(holder.proc.pid, signal.SIGKILL)
        since = time.time()
        wait_for(lambda: heartbeat_runs(celery_worker.output(), since + LOCK_TIMEOUT) >= 3,
                 timeout=LOCK_TIMEOUT + 10 * PERIOD, what="the standby beat to take over")
        assert "Acquired lock" in standby.output() or "acquired lock" in standby.output().lower()
    finally:
        first.stop()
        second.stop()
