"""Time limits and retry delays, in one place, because the broker's
visibility timeout must be derived from them.

With Redis, an unacknowledged message (acks_late) goes back to the queue
when the visibility timeout passes. If that timeout were shorter than a
task's hard limit, or than a retry's countdown (ETA tasks sit unacked in the
worker), the same task would run twice at once.
"""

from veza.settings import get_settings

# (soft, hard) seconds
DEFAULT_TIME_LIMITS = (60, 90)
FILE_TIME_LIMITS = (300, 360)
SCAN_TIME_LIMITS = (300, 360)
MAINTENANCE_TIME_LIMITS = (1800, 1900)
# A run must end well inside its soft time limit: what its phases leave
# undone the next run resumes, while a run killed at the limit is recorded
# failed and wastes its last batch. MAINTENANCE_RUN_BUDGET_SECONDS overrides it.
DEFAULT_RUN_BUDGET_SECONDS = MAINTENANCE_TIME_LIMITS[0] - 300

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


def beat_redis_timeout() -> float:
    """A beat's call to Redis gives up after this long: two attempts of it
    and a tick (BEAT_LOCK_TIMEOUT / 5) still renew the lock before it
    expires."""
    return max(get_settings().beat_lock_timeout / 10, 0.5)


def run_budget_seconds() -> int:
    """The time a phased maintenance run (purge_retention,
    backfill_enrichment) shares among its phases:
    MAINTENANCE_RUN_BUDGET_SECONDS, else DEFAULT_RUN_BUDGET_SECONDS."""
    configured = get_settings().maintenance_run_budget_seconds
    return DEFAULT_RUN_BUDGET_SECONDS if configured is None else configured


# A connection idle this long is checked with a PING before it is used
# (redis-py), and a worker's BRPOP connection overdue by this long is
# dropped (kombu): kombu's default, stated here beside the timeouts
# (BROKER_SOCKET_TIMEOUT, veza/settings.py).
BROKER_HEALTH_CHECK_INTERVAL = 25
