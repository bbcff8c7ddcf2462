"""Celery beat that outlives Redis: redbeat's scheduler, made to back off
and carry on instead of exiting.

redbeat (2.4) takes its lock once, in a `beat_init` handler that blocks
until it has it, and extends it at the top of every tick. A Redis error in
either place ends the process: a ConnectionError on a blip, a
LockNotOwnedError after an outage longer than the lock (the key expired, or
a Redis restarted without persistence lost it), or the AttributeError of a
tick with no lock when the handler failed. Every standby beat waits on the
same Redis, so they all die together. Here:

- the lock is taken in `tick`, without blocking: a beat without it is a
  standby that asks again every tick (`max_interval`);
- a Redis error in a tick is logged, and the next tick comes after a
  capped exponential backoff;
- a lost lock makes the beat a standby again. A beat schedules only in a
  tick that has just extended its lock, so two beats still schedule once;
- the schedule is written to Redis each time a beat takes the lock, not
  when it starts: only the holder writes it, and a Redis that came back
  empty (the lock gone with everything else) gets it again.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.signals import beat_init
from redbeat.schedulers import (
    LUA_EXTEND_TO_SCRIPT,
    RedBeatScheduler,
    acquire_distributed_beat_lock,
    get_redis,
)
from redis.lock import Lock

log = logging.getLogger("celery.beat")

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)

# Taking the lock is tick's job here (see above).
beat_init.disconnect(acquire_distributed_beat_lock)


class Scheduler(RedBeatScheduler):
    # Set by celery's and redbeat's __init__ (both untyped): their types here.
    lock: Lock | None
    max_interval: float

    _failures = 0
    _schedule_written = False

    def setup_schedule(self) -> None:
        """Nothing at start: the schedule is written when the lock is taken."""

    def tick(self, **kwargs: Any) -> float:
        try:
            if self.lock is None and not self._take_lock():
                return self.max_interval
            if not self._schedule_written:
                super().setup_schedule()
                self._schedule_written = True
            interval: float = super().tick(**kwargs)  # extends the lock, then schedules
        except redis.exceptions.LockError as exc:
            log.warning("beat: lost the lock (%s); standing by", exc)
            self.lock = None
            return self.max_interval
        except REDIS_ERRORS as exc:
            self._failures += 1
            backoff: int = 2 ** (self._failures - 1)  # an int: the exponent is >= 0
            delay = min(backoff, self.max_interval)
            log.warning("beat: Redis unavailable (%s); trying again in %ss", exc, delay)
            return delay
        self._failures = 0
        return interval

    def _take_lock(self) -> bool:
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout)
        # redbeat's extend sets the lock's time to live, where redis-py's
        # would add to what is left.
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        if not lock.acquire(blocking=False):
            return False
        log.info("beat: Acquired lock")
        self.lock, self._schedule_written = lock, False
        return True

    def close(self) -> None:
        try:
            super().close()
        except REDIS_ERRORS as exc:
            log.warning("beat: could not release the lock (%s); it expires by itself", exc)
            self.lock = None
