"""The maintenance tasks: thin entry points over worker/maintenance/*.

Every task takes `dry_run=False` and runs under the common rules of
worker/maintenance/run.py (one at a time, run log, audit row, progress).
Schedules are in beat_schedule.py; docs/maintenance.md describes each task.
"""

from __future__ import annotations

from datetime import date

from worker.maintenance import file_jobs, files, outbox, partitions, recount, retention, sessions, stats
from worker.maintenance.run import Run, maintenance_task


@maintenance_task("maintenance.purge_retention")
def purge_retention(run: Run) -> None:
    """Archive and delete messages past their room's retention; drop whole
    covered partitions; purge the archive and old audit partitions."""
    retention.purge(run)


@maintenance_task("maintenance.purge_expired_files")
def purge_expired_files(run: Run, grace_seconds: int | None = None) -> None:
    """Expired files, then the orphan sweep of storage and of rows whose
    stored content is missing."""
    files.purge_expired(run)
    files.sweep_orphans(run, grace_seconds)
    files.fail_rows_with_missing_blobs(run, grace_seconds)


@maintenance_task("maintenance.expire_sessions")
def expire_sessions(run: Run) -> None:
    """Expired sessions, ended login locks, and (housekeeping of the same
    kind) outbox rows whose work finished more than OUTBOX_RETENTION_DAYS ago."""
    sessions.expire(run)
    sessions.reset_expired_locks(run)
    outbox.prune_finished(run)


@maintenance_task("maintenance.redrive_outbox")
def redrive_outbox(run: Run) -> None:
    """Outbox rows sent long ago whose work never finished, sent again
    (bounded by OUTBOX_MAX_REDRIVES, then recorded dead)."""
    outbox.redrive(run)


@maintenance_task("maintenance.ensure_partitions")
def ensure_partitions(run: Run, months_ahead: int | None = None, today: str | None = None,
                      months_behind: int | None = None) -> None:
    """Monthly partitions of messages and audit_logs, from N months behind
    to M months ahead of this month (or of the ISO date `today`, to prepare
    ahead by hand)."""
    partitions.ensure(run, months_ahead, date.fromisoformat(today) if today else None,
                      months_behind)


@maintenance_task("maintenance.refresh_room_stats")
def refresh_room_stats(run: Run) -> None:
    """room_stats from the incremental rollup."""
    stats.refresh(run)


@maintenance_task("maintenance.requeue_stale_files")
def requeue_stale_files(run: Run, stale_seconds: float | None = None) -> None:
    """Files whose work started and stalled, enqueued again (bounded); files
    whose work has not started yet are waiting, not stuck."""
    file_jobs.requeue_stale(run, stale_seconds)


@maintenance_task("maintenance.requeue_failed_files")
def requeue_failed_files(run: Run) -> None:
    """Failed files (not infected ones) through the pipeline again; run by
    operators (`veza maintenance run requeue_failed_files`), not scheduled."""
    file_jobs.requeue_failed(run)


@maintenance_task("maintenance.rescan_files")
def rescan_files(run: Run, signature_version: str | None = None) -> None:
    """Failed scans retried; recent files rescanned on new signatures."""
    file_jobs.rescan(run, signature_version)


@maintenance_task("maintenance.recount_counters")
def recount_counters(run: Run) -> None:
    """The counters messages.index keeps (members' message counts, DM unread
    counts, last_seen_at), recounted in full: a safety net for lost work."""
    recount.recount(run)
