"""Tasks about the system itself."""

from __future__ import annotations

import time

from celery import shared_task

from worker.base import VezaTask

HEARTBEAT_KEY = "veza:heartbeat"


@shared_task(bind=True, base=VezaTask, name="system.heartbeat")
def heartbeat(self: VezaTask) -> float:
    """Prove that workers are consuming: stamp the time this ran in Redis.
    A stale stamp means no worker took a task from the queue."""
    now = time.time()
    self._redis.set(HEARTBEAT_KEY, now)
    return now
