"""The maintenance tasks: thin entry points over the core's steps
(veza/maintenance/, veza/files/, veza/messages/).

Every task takes `dry_run=False` and runs under the common rules of
veza/maintenance/run.py (one at a time, run log, audit row, progress).
Schedules are in beat_schedule.py; docs/maintenance.md describes each task.
"""

from __future__ import annotations

from datetime import date

from veza import jobs
from veza.accounts import erasure, export
from veza.files import expiry_policy, rendition_backfill, requeue, sweeps
from veza.maintenance import outbox_redrive, partition_upkeep, room_stats, session_expiry
from veza.maintenance.run import Run
from veza.messages import backfill, recount, retention, scrub
from veza.notifications import missed_email
from worker.maintenance_task import maintenance_task


@maintenance_task(jobs.PURGE_RETENTION)
def purge_retention(run: Run) -> None:
    """Archive and delete messages past their room's retention; drop whole
    covered partitions; purge the archive and old audit partitions."""
    retention.purge(run)


@maintenance_task(jobs.PURGE_EXPIRED_FILES)
def purge_expired_files(run: Run, grace_seconds: int | None = None) -> None:
    """Expiry set by policy (unattached uploads, rooms with retention), then
    expired files and data exports past their download window, then the
    orphan sweep of storage and of rows whose stored content is missing."""
    expiry_policy.set_expiry_by_policy(run)
    sweeps.purge_expired(run)
    export.purge_expired_exports(run)
    sweeps.sweep_orphans(run, grace_seconds)
    sweeps.fail_rows_with_missing_blobs(run, grace_seconds)


@maintenance_task(jobs.EXPIRE_SESSIONS)
def expire_sessions(run: Run) -> None:
    """Expired sessions, ended login locks and mutes, and (housekeeping of
    the same kind) outbox rows whose work finished more than
    OUTBOX_RETENTION_DAYS ago and notifications read more than
    NOTIFICATION_RETENTION_DAYS ago."""
    session_expiry.expire(run)
    session_expiry.reset_expired_locks(run)
    session_expiry.reset_expired_mutes(run)
    outbox_redrive.prune_finished(run)
    session_expiry.prune_read_notifications(run)


@maintenance_task(jobs.REDRIVE_OUTBOX)
def redrive_outbox(run: Run) -> None:
    """Outbox rows sent long ago whose work never finished, sent again
    (bounded by OUTBOX_MAX_REDRIVES, then recorded dead)."""
    outbox_redrive.redrive(run)


@maintenance_task(jobs.ENSURE_PARTITIONS)
def ensure_partitions(
    run: Run,
    months_ahead: int | None = None,
    today: str | None = None,
    months_behind: int | None = None,
) -> None:
    """Monthly partitions of messages and audit_logs, from N months behind
    to M months ahead of this month (or of the ISO date `today`, to prepare
    ahead by hand)."""
    partition_upkeep.ensure(
        run, months_ahead, date.fromisoformat(today) if today else None, months_behind
    )


@maintenance_task(jobs.REFRESH_ROOM_STATS)
def refresh_room_stats(run: Run) -> None:
    """room_stats from the incremental rollup."""
    room_stats.refresh(run)


@maintenance_task(jobs.REQUEUE_STALE_FILES)
def requeue_stale_files(run: Run, stale_seconds: float | None = None) -> None:
    """Files whose work started and stalled, enqueued again (bounded); files
    whose work has not started yet are waiting, not stuck."""
    requeue.requeue_stale(run, stale_seconds)


@maintenance_task(jobs.REQUEUE_FAILED_FILES)
def requeue_failed_files(run: Run) -> None:
    """Failed files (not infected ones) through the pipeline again; run by
    operators (`veza maintenance run requeue_failed_files`), not scheduled."""
    requeue.requeue_failed(run)


@maintenance_task(jobs.RESCAN_FILES)
def rescan_files(run: Run, signature_version: str | None = None) -> None:
    """Failed scans retried; recent files rescanned on new signatures."""
    requeue.rescan(run, signature_version)


@maintenance_task(jobs.RECOUNT_COUNTERS)
def recount_counters(run: Run) -> None:
    """The counters messages.index keeps (members' message counts, DM unread
    counts, last_seen_at), recounted in full: a safety net for lost work."""
    recount.recount(run)


@maintenance_task(jobs.EMAIL_MISSED_NOTIFICATIONS)
def email_missed_notifications(run: Run) -> None:
    """One email per user who left notifications unread while away, listing
    them (veza/notifications/missed_email.py); a dry run counts the users."""
    if run.dry_run:
        missed_email.count_due(run)
    else:
        missed_email.send_missed(run)


@maintenance_task(jobs.BACKFILL_ENRICHMENT)
def backfill_enrichment(run: Run) -> None:
    """Live messages messages.index never enriched (written before
    migrations 0014 and 0015, or their work given up on), enriched newest
    first, search vector included: a safety net, as the recount is."""
    backfill.backfill(run)


@maintenance_task(jobs.SCRUB_DELETED_CONTENT)
def scrub_deleted_content(run: Run) -> None:
    """The content of messages deleted more than DELETED_CONTENT_GRACE_DAYS
    ago, live and archived, replaced by a tombstone with everything derived
    from it."""
    scrub.scrub_deleted(run)


@maintenance_task(jobs.ERASE_DELETED_ACCOUNTS)
def erase_deleted_accounts(run: Run) -> None:
    """Accounts deleted more than ACCOUNT_DELETE_GRACE_DAYS ago, erased:
    messages tombstoned, the rest of their data removed, the row anonymised
    (veza/accounts/erasure.py)."""
    erasure.erase_deleted(run)


@maintenance_task(jobs.BACKFILL_RENDITIONS)
def backfill_renditions(run: Run) -> None:
    """Renditions, of the sizes configured now, for clean files that lack
    them (processed before renditions, or under other RENDITION_SIZES),
    and for files whose type was not read when they were processed
    (veza/files/rendition_backfill.py). By hand, not on beat."""
    rendition_backfill.backfill(run)
