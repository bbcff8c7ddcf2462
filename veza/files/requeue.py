"""Getting stuck or outdated file work done again, through the outbox.

The files.* tasks belong to the file pipeline; maintenance only enqueues
them by name (veza.files.owed.owe, in the same transaction as the row's
bookkeeping, so an enqueue is never lost nor doubled by a kill).

Bookkeeping lives in the file row's metadata:
- `outbox_id`: the outbox row of the latest work owed for the file (owe);
- `requeue_attempts`, `requeued_at`: how often, and when last, a stuck
  file was enqueued again; after MAX_FILE_ATTEMPTS it is marked failed;
- `scan_retries`: how often a failed scan was retried (MAX_SCAN_RETRIES).

A file not done (pending, processing or scanning) is "stuck" only when its
latest owed work started (the outbox row's started_at) and then nothing
moved for STALE_FILE_MINUTES: not the start, nor the pipeline's own
`processing_started_at` stamp. Work still unsent (relay or Redis down), or
sent and not started (a backlog: workers down or busy), is waiting, not
stuck: a requeue would only add a duplicate behind it, and would count an
attempt against a file that never had one. A message Redis lost is the
outbox re-drive's to send again. A file with no owed work on record (from
before the link was kept, or its outbox row pruned) is judged by age, from
the latest of created_at, requeued_at and processing_started_at. A
scanning file is owed files.scan again, any other files.process.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import AuditSeverity
from veza import audit, jobs
from veza.clamav import Scanner, ScanUnavailable
from veza.files import states
from veza.files.owed import owe
from veza.jobs import Job
from veza.maintenance.batched import KeysetBatches
from veza.maintenance.run import Run
from veza.settings import get_settings
from veza.statements import compose

log = logging.getLogger(__name__)

# Not done, with nothing moving since `:seconds` ago; `waiting` when its
# latest owed work was not started yet (the caller leaves those alone).
STALE = (
    "SELECT f.id, f.virus_scan_status = 'scanning' AS scanning,"
    " COALESCE((f.metadata->>'requeue_attempts')::int, 0) AS attempts,"
    " o.id IS NOT NULL AND o.started_at IS NULL AS waiting"
    " FROM files f LEFT JOIN outbox o ON o.id = CAST(f.metadata->>'outbox_id' AS uuid)"
    " WHERE (f.processing_status IN ('pending', 'processing') OR f.virus_scan_status = 'scanning')"
    " AND GREATEST(f.created_at, (f.metadata->>'requeued_at')::timestamptz,"
    "  (f.metadata->>'processing_started_at')::timestamptz, o.started_at)"
    " < now() - make_interval(secs => :seconds)"
    " AND {after} ORDER BY {key} LIMIT :size FOR UPDATE OF f SKIP LOCKED"
)


def requeue_stale(run: Run, stale_seconds: float | None = None) -> None:
    """Requeue the stuck files (see the module's docstring), give up on
    those requeued MAX_FILE_ATTEMPTS times, and count those still waiting
    for their work to start. `stale_seconds` overrides STALE_FILE_MINUTES."""
    if stale_seconds is None:
        stale_seconds = get_settings().stale_file_minutes * 60
    for session, rows in KeysetBatches(
        run, STALE, {"seconds": stale_seconds}, key=("f.id",), initial=200
    ):
        for row in rows:
            if row.waiting:
                run.add(stale_waiting=1)
            elif row.attempts >= get_settings().max_file_attempts:
                run.add(stale_failed=1)
                if not run.dry_run:
                    give_up(session, row.id, row.attempts)
            else:
                run.add(stale_requeued=1)
                if not run.dry_run:
                    requeue(session, row.id, jobs.SCAN_FILE if row.scanning else jobs.PROCESS_FILE)


def requeue(session: Session, file_id: int, job: Job) -> None:
    session.execute(
        text(
            "UPDATE files SET metadata = metadata || jsonb_build_object("
            " 'requeue_attempts', COALESCE((metadata->>'requeue_attempts')::int, 0) + 1,"
            " 'requeued_at', now()) WHERE id = :id"
        ),
        {"id": file_id},
    )
    owe(session, job, file_id)


def give_up(session: Session, file_id: int, attempts: int) -> None:
    """Failed, but not for good: being stuck says something about the
    workers, not about the input, so there is no failure_reason (which every
    step takes as final). The reason is in metadata.error, a scan left
    `scanning` is `failed`, and requeue_failed_files (or any later run of
    the file's pipeline, a failed scan's retry included) takes it up again."""
    session.execute(
        text(
            "UPDATE files SET processing_status = 'failed',"
            " virus_scan_status = CASE WHEN virus_scan_status = 'scanning'"
            "  THEN 'failed'::virus_scan_status ELSE virus_scan_status END,"
            " metadata = metadata || jsonb_build_object('failed_step', 'stuck',"
            "  'error', CAST(:error AS text))"
            " WHERE id = :id"
        ),
        {"id": file_id, "error": f"stuck: no progress after {attempts} requeues"},
    )
    log.warning("file %s: stuck through %d requeues; marked failed (retryable)", file_id, attempts)


# Failed, for good or not, and never infected: what Retry and
# requeue_failed_files put through the pipeline again.
RETRYABLE = (
    "(processing_status = 'failed' OR virus_scan_status = 'failed')"
    " AND virus_scan_status <> 'infected'"
)


def requeue_failed(run: Run) -> None:
    """Put every failed file through the pipeline again, infected ones
    excepted: for after an outage or a fixed bug (`send_back`)."""
    batches = KeysetBatches(
        run,
        "SELECT id FROM files WHERE {retryable} AND {after} ORDER BY {key} LIMIT :size"
        " FOR UPDATE SKIP LOCKED",
        initial=200,
        retryable=sql.SQL(RETRYABLE),
    )
    for session, rows in batches:
        ids = [row.id for row in rows]
        run.add(failed_requeued=len(ids))
        if not run.dry_run:
            send_back(session, ids)


def retry(file_id: int, operator: str) -> bool:
    """One failed file through the pipeline again (the console's Retry),
    as requeue_failed does for them all, audited with the operator's name
    and the failure it had. False, and nothing done, when the file is not
    failed: retried already, done, infected, or gone."""
    with session_scope() as session:
        found = session.execute(
            compose(
                "SELECT id, metadata->>'failed_step' AS step, {reason} AS reason"
                " FROM files WHERE id = :id AND {retryable} FOR UPDATE",
                reason=sql.SQL(states.REASON),
                retryable=sql.SQL(RETRYABLE),
            ),
            {"id": file_id},
        ).one_or_none()
        if found is None:
            return False
        send_back(session, [file_id])
        audit.record(
            session,
            "file.retried",
            {"operator": operator, "failed_step": found.step, "reason": found.reason},
            resource_type="file",
            resource_id=file_id,
            severity=AuditSeverity.warning,
        )
    return True


def send_back(session: Session, ids: list[int]) -> None:
    """Failed files (locked by the caller) back to pending, owed
    files.process in the same transaction: the recorded failure is cleared,
    so the pipeline (which skips files that failed for good) runs them from
    the start."""
    session.execute(
        text(
            "UPDATE files SET processing_status = 'pending', is_processed = false,"
            " virus_scan_status = CASE WHEN virus_scan_status = 'failed'"
            "  THEN 'pending'::virus_scan_status ELSE virus_scan_status END,"
            # requeued_at restarts the stuck-file clock (the file is pending
            # again), and the stuck-file attempts start over.
            " metadata = (metadata - 'failure_reason' - 'failed_step' - 'error'"
            "  - 'requeue_attempts')"
            "  || jsonb_build_object('requeued_at', now())"
            " WHERE id = ANY(:ids)"
        ),
        {"ids": ids},
    )
    for file_id in ids:
        owe(session, jobs.PROCESS_FILE, file_id)


def rescan(run: Run, signature_version: str | None = None) -> None:
    """Retry failed scans (bounded), and rescan the clean files of the last
    RESCAN_DAYS days whose verdict was reached under another signature
    version than clamd's current one: new signatures may catch what the old
    ones missed. Chosen per row, so a file whose rescan did not happen
    (clamd down through every retry) is picked again by the next run."""
    retry_failed_scans(run)
    current = signature_version or current_signature_version()
    if current is None:
        return
    # The one string among the counts (docs/maintenance.md): the run reports
    # the signature version it rescanned against.
    run.counts["signature_version"] = current  # type: ignore[assignment]
    enqueue_scans(
        run,
        "rescanned",
        "virus_scan_status = 'clean' AND created_at >= now() - make_interval(days => :days)"
        " AND metadata->>'clamd_version' IS DISTINCT FROM :current",
        {"days": get_settings().rescan_days, "current": current},
    )


def retry_failed_scans(run: Run) -> None:
    """Scans that got no verdict (clamd unavailable), a bounded number of
    times; not files failed for good (failure_reason: unscannable,
    stuck), which the pipeline would skip: requeue_failed is for those."""
    enqueue_scans(
        run,
        "scans_retried",
        "virus_scan_status = 'failed' AND NOT metadata ? 'failure_reason'"
        " AND COALESCE((metadata->>'scan_retries')::int, 0) < :max",
        {"max": get_settings().max_scan_retries},
        bump="'scan_retries', COALESCE((metadata->>'scan_retries')::int, 0) + 1",
    )


def enqueue_scans(
    run: Run, key: str, where: str, params: dict[str, Any], bump: str | None = None
) -> None:
    batches = KeysetBatches(
        run,
        "SELECT id FROM files WHERE {where} AND {after} ORDER BY {key} LIMIT :size",
        params,
        initial=200,
        where=sql.SQL(where),
    )
    for session, rows in batches:
        ids = [row.id for row in rows]
        run.add(**{key: len(ids)})
        if run.dry_run:
            continue
        if bump:
            session.execute(
                compose(
                    "UPDATE files SET metadata = metadata || jsonb_build_object({bump})"
                    " WHERE id = ANY(:ids)",
                    bump=sql.SQL(bump),
                ),
                {"ids": ids},
            )
        for file_id in ids:
            owe(session, jobs.SCAN_FILE, file_id)


def current_signature_version() -> str | None:
    """clamd's signature version (Scanner.version); None if clamd is
    unreachable (the failed-scan retries still ran)."""
    try:
        return Scanner(timeout=10).version()
    except ScanUnavailable as exc:
        log.warning("clamd unreachable (%s): signature version unknown", exc)
        return None
