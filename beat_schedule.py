"""Every periodic schedule, in one place.

Each entry is a crontab with `expires`, so that a backlog after an outage
does not run a pile of stale copies of the same job. Any schedule can be
overridden from the environment with five cron fields, e.g.
VEZA_SCHEDULE_HEARTBEAT="*/2 * * * *", or with a number of seconds for an
interval shorter than cron's minute (VEZA_SCHEDULE_HEARTBEAT=15).
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from veza import jobs
from veza.jobs import Job
from veza.settings import get_settings


def parse_schedule(expression: str) -> crontab | float:
    """Five cron fields, or a plain number of seconds."""
    if expression.strip().replace(".", "", 1).isdigit():
        return float(expression)
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    return crontab(minute, hour, day_of_month, month_of_year, day_of_week)


def period_seconds(schedule: crontab | float) -> float | None:
    """The longest wait between two runs on `schedule`: its seconds, or for
    a crontab that runs every day, the widest gap between its times of day.
    None for one that skips days (weekly, monthly): the exporter then
    publishes no period for it, and no alert compares its last success
    with one (deploy/alerts.yml)."""
    if not isinstance(schedule, crontab):
        return float(schedule)
    every_day = (
        schedule.day_of_week == set(range(7))
        and schedule.day_of_month == set(range(1, 32))
        and schedule.month_of_year == set(range(1, 13))
    )
    if not every_day:
        return None
    times: list[int] = sorted(h * 60 + m for h in schedule.hour for m in schedule.minute)
    gaps = [b - a for a, b in zip(times, [*times[1:], times[0] + 24 * 60], strict=True)]
    return 60.0 * max(gaps)


def scheduled(
    name: str, job: Job, cron: str, expires: int, **kwargs: Any
) -> tuple[str, dict[str, Any]]:
    """A beat entry named `name` running `job` on `cron` (overridable by
    VEZA_SCHEDULE_<NAME>), whose message expires after `expires` seconds."""
    expression = get_settings().schedules.get(name, cron)
    try:
        schedule = parse_schedule(expression)
    except ValueError as exc:
        raise ValueError(f"VEZA_SCHEDULE_{name.upper()}={expression!r}: {exc}") from None
    return name, {
        "task": job.name,
        "schedule": schedule,
        "options": {"expires": expires},
        "kwargs": kwargs,
    }


BEAT_SCHEDULE: dict[str, dict[str, Any]] = dict(
    [
        # Liveness: a stale heartbeat means no worker consumes (docs/operations.md).
        scheduled("heartbeat", jobs.HEARTBEAT, "* * * * *", expires=50),
        # Maintenance (docs/maintenance.md): each expires before its next run.
        scheduled("purge_retention", jobs.PURGE_RETENTION, "17 3 * * *", expires=3600),
        scheduled("purge_expired_files", jobs.PURGE_EXPIRED_FILES, "27 * * * *", expires=1800),
        scheduled("expire_sessions", jobs.EXPIRE_SESSIONS, "*/15 * * * *", expires=600),
        scheduled("ensure_partitions", jobs.ENSURE_PARTITIONS, "7 1 * * *", expires=3600),
        scheduled("refresh_room_stats", jobs.REFRESH_ROOM_STATS, "*/5 * * * *", expires=240),
        scheduled("requeue_stale_files", jobs.REQUEUE_STALE_FILES, "*/10 * * * *", expires=500),
        scheduled("rescan_files", jobs.RESCAN_FILES, "47 */6 * * *", expires=3600),
        # Daily: the outbox re-drive repairs lost messages.index work within
        # minutes; this pass, which reads every message once, is the net
        # under that net (docs/maintenance.md).
        scheduled("recount_counters", jobs.RECOUNT_COUNTERS, "37 4 * * *", expires=3600),
        # Daily, for the same reason: the enrichment (and search vector) of
        # messages messages.index never reached; the first runs after
        # migrations 0014/0015 do the history (docs/maintenance.md).
        scheduled("backfill_enrichment", jobs.BACKFILL_ENRICHMENT, "57 4 * * *", expires=3600),
        # Daily, after the retention purge: deleted messages' content, once
        # DELETED_CONTENT_GRACE_DAYS old, is scrubbed (docs/maintenance.md).
        scheduled("scrub_deleted_content", jobs.SCRUB_DELETED_CONTENT, "47 3 * * *", expires=3600),
        # Accounts past their deletion grace, erased (docs/maintenance.md).
        scheduled(
            "erase_deleted_accounts", jobs.ERASE_DELETED_ACCOUNTS, "17 2 * * *", expires=3600
        ),
        # Owed work that never finished is sent again (docs/operations.md).
        scheduled("redrive_outbox", jobs.REDRIVE_OUTBOX, "* * * * *", expires=50),
        # Notifications left unread while away, emailed (docs/api.md).
        scheduled(
            "email_missed_notifications",
            jobs.EMAIL_MISSED_NOTIFICATIONS,
            "* * * * *",
            expires=50,
        ),
    ]
)
