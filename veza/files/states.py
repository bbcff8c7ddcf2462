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
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from db.models import File, VirusScanStatus
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
