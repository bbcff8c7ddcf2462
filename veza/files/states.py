"""Files by terminal state: what the pipeline (veza/files/pipeline.py)
concluded, counted for the exporter's metrics and the operator console.

- `clean`: a clean verdict (servable), not since failed;
- `infected`: quarantined (`virus_scan_status = 'infected'`);
- `unscannable`: failed for good because the scanner could not inspect it
  (`failure_reason` = `unscannable: …`, what pipeline.is_unscannable tells);
- `failed`: any other failure (bad input, content lost, stuck, no scanner
  after every retry).

Cheap on a table of millions: the failures come from the partial index
idx_files_failed (failed rows only), the clean ones from an index-only
count of idx_files_virus_scan. Files still in progress are in none.

The operator console adds where the others are (`pending`, `processing`,
`scanning`: `counts`), the oldest of those, and the failed files of each
kind with their reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, func, select, text
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import File, FileProcessingStatus, VirusScanStatus
from veza.files import pipeline
from veza.files.pipeline import UNSCANNABLE

TERMINAL_STATES = ("clean", "infected", "failed", "unscannable")


def terminal_state_counts(session: Session) -> dict[str, int]:
    """Every terminal state with its number of files (0 when none)."""
    counts = dict.fromkeys(TERMINAL_STATES, 0)
    unscannable = File.meta["failure_reason"].astext.startswith(f"{UNSCANNABLE}: ")
    failures = session.execute(
        select(File.virus_scan_status, unscannable, func.count())
        # Literally the partial index's predicate (a bind parameter would
        # keep the planner from using it).
        .where(text("processing_status = 'failed'"))
        .group_by(File.virus_scan_status, unscannable)
    ).all()
    failed_after_a_clean_scan = 0
    for scan, is_unscannable, n in failures:
        if scan is VirusScanStatus.infected:
            counts["infected"] += n
        elif scan is VirusScanStatus.failed and is_unscannable:
            counts["unscannable"] += n
        else:
            counts["failed"] += n
            if scan is VirusScanStatus.clean:
                failed_after_a_clean_scan += n
    clean_scans = session.scalar(
        select(func.count()).where(File.virus_scan_status == VirusScanStatus.clean)
    )
    counts["clean"] = (clean_scans or 0) - failed_after_a_clean_scan
    return counts


IN_PROGRESS = ("pending", "processing", "scanning")
# In progress: the pipeline still owes it a step, and it has no clean
# verdict yet (one with a clean verdict and its thumbnail to come is clean).
NOT_DONE = (
    "(processing_status IN ('pending', 'processing') OR virus_scan_status = 'scanning')"
    " AND virus_scan_status <> 'clean'"
)


def counts() -> dict[str, int]:
    """Files in each state: those in progress, then the terminal ones."""
    with session_scope() as session:
        in_progress = dict.fromkeys(IN_PROGRESS, 0)
        rows = session.execute(
            text(
                "SELECT CASE WHEN virus_scan_status = 'scanning' THEN 'scanning'"
                " ELSE processing_status::text END AS state, count(*) AS n FROM files"
                f" WHERE {NOT_DONE} GROUP BY 1"
            )
        ).all()
        in_progress.update({row.state: row.n for row in rows})
        return in_progress | terminal_state_counts(session)


def oldest_not_done() -> Row[Any] | None:
    """The file waiting longest for its pipeline to finish, if any."""
    with session_scope() as session:
        return session.execute(
            text(
                "SELECT id, original_filename, created_at,"
                " CASE WHEN virus_scan_status = 'scanning' THEN 'scanning'"
                "  ELSE processing_status::text END AS state"
                f" FROM files WHERE {NOT_DONE} ORDER BY created_at, id LIMIT 1"
            )
        ).one_or_none()


# What a failed file says went wrong: its final failure, a stuck file's
# error, or the scanner's last answer.
REASON = "COALESCE(metadata->>'failure_reason', metadata->>'error', virus_scan_result)"
# A failed file's kind, as terminal_state_counts tells them apart.
_UNSCANNABLE = (
    "virus_scan_status = 'failed' AND COALESCE(metadata->>'failure_reason', '') LIKE :unscannable"
)
FAILED_KINDS = {
    "unscannable": _UNSCANNABLE,
    "failed": f"virus_scan_status <> 'infected' AND NOT ({_UNSCANNABLE})",
}


def failed(kind: str, limit: int = 50) -> Sequence[Row[Any]]:
    """The failed files of `kind` (`failed` or `unscannable`), newest
    first, each with its failed step and what went wrong (REASON)."""
    with session_scope() as session:
        return session.execute(
            text(
                "SELECT id, original_filename, created_at, metadata->>'failed_step' AS step,"
                f" {REASON} AS reason FROM files"
                f" WHERE processing_status = 'failed' AND ({FAILED_KINDS[kind]})"
                " ORDER BY created_at DESC, id DESC LIMIT :limit"
            ),
            {"unscannable": f"{UNSCANNABLE}: %", "limit": limit},
        ).all()


def state_of(file_id: int) -> str | None:
    """One file's state, as counted above; None when there is no such file."""
    with session_scope() as session:
        file = session.get(File, file_id)
        if file is None:
            return None
        if file.processing_status is FileProcessingStatus.failed:
            if file.virus_scan_status is VirusScanStatus.infected:
                return "infected"
            return "unscannable" if pipeline.is_unscannable(file) else "failed"
        if file.virus_scan_status in (VirusScanStatus.clean, VirusScanStatus.scanning):
            return str(file.virus_scan_status.value)
        return str(file.processing_status.value)
