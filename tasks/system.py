"""Tasks about the system itself."""

from __future__ import annotations

import time

from celery import shared_task

from veza import jobs
from veza.redis_store import HEARTBEAT_KEY
from worker.base import VezaTask


@shared_task(bind=True, base=VezaTask, name=jobs.HEARTBEAT.name)
def heartbeat(self: VezaTask) -> float:
    """Prove that workers are consuming: stamp the time this ran in Redis.
    A stale stamp means no worker took a task from the queue."""
    now = time.time()
    self._redis.set(HEARTBEAT_KEY, now)
    return now
