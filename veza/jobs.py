"""Every kind of work, named once, as a typed reference.

The API and the domain code owe work through the outbox (veza/outbox.py)
without importing Celery: the web process must not load the worker app. A
`Job` names the Celery task that will do the work; tasks/ registers each
task under its job's name (`@shared_task(name=jobs.PROCESS_FILE.name)`), and
beat_schedule.py schedules jobs. A misspelt job is an AttributeError when
the module that uses it is imported, not a message no worker knows, and a
test checks that the worker app registers exactly these names.

A job whose single runs are small and many (a message posted) may name the
job that does a batch of them (`batch`): the relay then publishes up to
BATCH_ROWS of its outbox rows as one message of that job, whose one
argument is the rows (worker/relay.py), so that Celery's per-message cost
is paid once per batch, not once per row.
"""

from __future__ import annotations

from dataclasses import dataclass

# The most outbox rows one batch carries: a batch of chat messages is a few
# tens of milliseconds of work, so a row waits for at most that many others.
BATCH_ROWS = 50


@dataclass(frozen=True)
class Job:
    name: str
    batch: Job | None = None  # the job that runs many of these rows at once

    def __str__(self) -> str:
        return self.name


PROCESS_FILE = Job("files.process")
HASH_FILE = Job("files.hash")
SNIFF_FILE = Job("files.sniff")
SCAN_FILE = Job("files.scan")
THUMBNAIL_FILE = Job("files.thumbnail")
INDEX_MESSAGES = Job("messages.index_batch")
INDEX_MESSAGE = Job("messages.index", batch=INDEX_MESSAGES)
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
# Task name -> the job that runs a batch of its rows.
BATCHES = {job.name: job.batch for job in ALL if job.batch is not None}
