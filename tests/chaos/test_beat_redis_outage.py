"""Chaos: Redis goes away under two beats, for a second, for twenty seconds,
restarted empty each time (no persistence), and hung (SIGSTOP). Neither beat
exits, the schedules fire again once Redis is back, and only one beat sends
them.

Uses its own redis-server on a free port, and counts what the beats send
straight from its `default` queue (no worker needed).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
import redis

from tests.conftest import ManagedProcess, wait_for
from tests.processes import free_port, start_redis

pytestmark = pytest.mark.slow

PERIOD = 1.0
LOCK_TIMEOUT = 6
WINDOW_PERIODS = 5
SENDING = "Sending due task heartbeat"  # redbeat's log line for each send


def start_beat(name: str, port: int) -> ManagedProcess:
    return ManagedProcess(
        name,
        [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO"],
        env={
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "VEZA_SCHEDULE_HEARTBEAT": str(PERIOD),
            "BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
            "TZ": "UTC",
        },
    ).start()


def heartbeats_queued(client: redis.Redis) -> int:
    return sum(
        json.loads(raw)["headers"]["task"] == "system.heartbeat"
        for raw in client.lrange("default", 0, -1)
    )


def assert_running(beats: list[ManagedProcess]) -> None:
    for beat in beats:
        assert beat.proc.poll() is None, f"{beat.name} exited:\n{beat.output()[-3000:]}"


def assert_one_beat_schedules(beats: list[ManagedProcess], client: redis.Redis) -> None:
    """The heartbeat fires again, and over the next few periods it is sent
    by one beat only, about once a period (two beats would send it twice)."""
    queued = heartbeats_queued(client)
    wait_for(
        lambda: heartbeats_queued(client) >= queued + 2,
        timeout=LOCK_TIMEOUT * 3 + 10,
        what="the heartbeat to be scheduled again",
    )
    marks = [len(beat.output()) for beat in beats]
    before = heartbeats_queued(client)
    time.sleep(WINDOW_PERIODS * PERIOD)
    sent_by = [
        beat.output()[mark:].count(SENDING) for beat, mark in zip(beats, marks, strict=False)
    ]
    assert min(sent_by) == 0, f"sends per beat: {sent_by}"
    assert sorted(sent_by)[1] > 0, f"sends per beat: {sent_by}"
    assert heartbeats_queued(client) - before <= WINDOW_PERIODS + 2
    assert_running(beats)


@pytest.mark.timeout(300)
def test_beats_outlive_redis_outages_and_still_schedule_once():
    port = free_port()
    client = redis.Redis(port=port)
    beats = [start_beat("beat-a", port), start_beat("beat-b", port)]
    server = None
    try:
        # Started before Redis: they wait for it instead of exiting.
        wait_for(
            lambda: all(
                "Redis unavailable" in beat.output() or beat.proc.poll() is not None
                for beat in beats
            ),
            timeout=60,
            what="both beats to find Redis down",
        )
        assert_running(beats)
        server = start_redis(port)
        assert_one_beat_schedules(beats, client)

        for seconds in (1, 20):
            server.stop()
            time.sleep(seconds)
            assert_running(beats)
            server = start_redis(port)  # empty: the lock and the schedule are gone
            assert_one_beat_schedules(beats, client)

        # Hung: connections open, nothing answers, past the lock's lifetime.
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(LOCK_TIMEOUT + 4)
            assert_running(beats)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert_one_beat_schedules(beats, client)
    finally:
        for beat in beats:
            beat.stop()
        if server is not None:
            server.stop()
