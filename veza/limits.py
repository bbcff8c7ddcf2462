"""Time limits and retry delays, in one place, because the broker's
visibility timeout must be derived from them.

With Redis, an unacknowledged message (acks_late) goes back to the queue
when the visibility timeout passes. If that timeout were shorter than a
task's hard limit, or than a retry's countdown (ETA tasks sit unacked in the
worker), the same task would run twice at once.
"""

import os

# (soft, hard) seconds
DEFAULT_TIME_LIMITS = (60, 90)
FILE_TIME_LIMITS = (300, 360)
SCAN_TIME_LIMITS = (300, 360)
MAINTENANCE_TIME_LIMITS = (1800, 1900)

RETRY_BACKOFF_MAX = 600  # the longest countdown any retry may wait
# Retries of transient errors use "full jitter": each countdown is drawn
# from [0, RETRY_BACKOFF_BASE * 2**n]. With a 1 s base and 5 retries, all
# five can land inside the few seconds of a PostgreSQL restart (seen in
# tests/chaos/test_postgres_restart.py); a 2 s base and 8 retries cover an
# outage of minutes while still spreading a burst of failing tasks.
RETRY_BACKOFF_BASE = 2
MAX_RETRIES = 8
# A message delivered this many times without finishing (a worker killed by
# the OOM killer on every try, say) is dropped and recorded as poison: a dead
# outbox row with its reason (worker/base.py), shown by `veza outbox`.
MAX_DELIVERIES = 5

LONGEST_HARD_TIME_LIMIT = max(
    DEFAULT_TIME_LIMITS[1], FILE_TIME_LIMITS[1], SCAN_TIME_LIMITS[1], MAINTENANCE_TIME_LIMITS[1]
)
VISIBILITY_TIMEOUT = LONGEST_HARD_TIME_LIMIT + RETRY_BACKOFF_MAX + 300

# How long a beat process's lock in Redis lives without being renewed: a
# second beat takes over at most this long, and one tick (a fifth of it,
# beat_max_loop_interval), after the first one died.
BEAT_LOCK_TIMEOUT = int(os.environ.get("BEAT_LOCK_TIMEOUT", "60"))
# A beat's call to Redis gives up after this long: two attempts of it and a
# tick (BEAT_LOCK_TIMEOUT / 5) still renew the lock before it expires.
BEAT_REDIS_TIMEOUT = max(BEAT_LOCK_TIMEOUT / 10, 0.5)

# Seconds a Redis connect or command may take before it fails. A Redis that
# accepts connections and never answers (SIGSTOPped, a half-open connection
# after a failover) would otherwise hang a publish, a task's Redis call or
# the relay forever. Redis answers in milliseconds; this is generous, and
# longer than kombu's 1 s BRPOP, which a read must be allowed to outwait.
BROKER_SOCKET_TIMEOUT = float(os.environ.get("BROKER_SOCKET_TIMEOUT", "5"))
# A connection idle this long is checked with a PING before it is used
# (redis-py), and a worker's BRPOP connection overdue by this long is
# dropped (kombu): kombu's default, stated here beside the timeout.
BROKER_HEALTH_CHECK_INTERVAL = 25
