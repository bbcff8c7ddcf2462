"""Every periodic schedule, in one place.

Each entry is a crontab with `expires`, so that a backlog after an outage
does not run a pile of stale copies of the same maintenance job.
"""

from __future__ import annotations

BEAT_SCHEDULE: dict[str, dict] = {}
