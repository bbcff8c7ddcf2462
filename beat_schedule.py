"""Every periodic schedule, in one place.

Each entry is a crontab with `expires`, so that a backlog after an outage
does not run a pile of stale copies of the same job. Any schedule can be
overridden from the environment with five cron fields, e.g.
VEZA_SCHEDULE_HEARTBEAT="*/2 * * * *".
"""

from __future__ import annotations

import os

from celery.schedules import crontab


def scheduled(name: str, task: str, cron: str, expires: int, **kwargs) -> tuple[str, dict]:
    """A beat entry named `name` running `task` on `cron` (overridable by
    VEZA_SCHEDULE_<NAME>), whose message expires after `expires` seconds."""
    minute, hour, day_of_month, month_of_year, day_of_week = os.environ.get(
        f"VEZA_SCHEDULE_{name.upper()}", cron
    ).split()
    return name, {
        "task": task,
        "schedule": crontab(minute, hour, day_of_month, month_of_year, day_of_week),
        "options": {"expires": expires},
        "kwargs": kwargs,
    }


BEAT_SCHEDULE: dict[str, dict] = dict(
    [
        # Liveness: a stale heartbeat means no worker consumes (docs/operations.md).
        scheduled("heartbeat", "system.heartbeat", "* * * * *", expires=50),
    ]
)
