"""Every kind of work, named once, as a typed reference.

The API and the domain code owe work through the outbox (veza/outbox.py)
without importing Celery: the web process must not load the worker app. A
`Job` names the Celery task that will do the work; tasks/ registers each
task under its job's name (`@shared_task(name=jobs.PROCESS_FILE.name)`), and
beat_schedule.py schedules jobs. A misspelt job is an AttributeError when
the module that uses it is imported, not a message no worker knows, and a
test checks that the worker app registers exactly these names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str

    def __str__(self) -> str:
        return self.name


PROCESS_FILE = Job("files.process")
HASH_FILE = Job("files.hash")
SNIFF_FILE = Job("files.sniff")
SCAN_FILE = Job("files.scan")
THUMBNAIL_FILE = Job("files.thumbnail")
INDEX_MESSAGE = Job("messages.index")
EXPORT_ACCOUNT = Job("accounts.export")
HEARTBEAT = Job("system.heartbeat")

PURGE_RETENTION = Job("maintenance.purge_retention")
PURGE_EXPIRED_FILES = Job("maintenance.purge_expired_files")
EXPIRE_SESSIONS = Job("maintenance.expire_sessions")
REDRIVE_OUTBOX = Job("maintenance.redrive_outbox")
ENSURE_PARTITIONS = Job("maintenance.ensure_partitions")
REFRESH_ROOM_STATS = Job("maintenance.refresh_room_stats")
REQUEUE_STALE_FILES = Job("maintenance.requeue_stale_files")
REQUEUE_FAILED_FILES = Job("maintenance.requeue_failed_files")
RESCAN_FILES = Job("maintenance.rescan_files")
RECOUNT_COUNTERS = Job("maintenance.recount_counters")
EMAIL_MISSED_NOTIFICATIONS = Job("maintenance.email_missed_notifications")
ERASE_DELETED_ACCOUNTS = Job("maintenance.erase_deleted_accounts")
BACKFILL_ENRICHMENT = Job("maintenance.backfill_enrichment")
SCRUB_DELETED_CONTENT = Job("maintenance.scrub_deleted_content")
BACKFILL_RENDITIONS = Job("maintenance.backfill_renditions")

ALL = tuple(value for value in globals().values() if isinstance(value, Job))
# What an operator may run by hand (`veza maintenance run`, the console).
MAINTENANCE = tuple(job for job in ALL if job.name.startswith("maintenance."))
