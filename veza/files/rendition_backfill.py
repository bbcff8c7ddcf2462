"""maintenance.backfill_renditions: renditions for files that lack those
of the sizes configured now (`veza maintenance run backfill_renditions`,
by hand: after an upgrade, or after RENDITION_SIZES changed).

Pending: a clean file of a type the renditions step reads
(renditions.RENDERED_TYPES: images, videos, PDFs) whose `metadata.rendition_sizes` is not
RENDITION_SIZES: processed before renditions (one 400 px thumbnail), or
under other sizes. So is one whose step failed only because its type was
not read then (`unsupported image format …`: TIFF, HEIC and AVIF before
issue 16): its failure is cleared and it goes through the step again, and
is completed if that succeeds.

Each file goes through the pipeline's own step (pipeline.thumbnail), so the
two cannot drift apart, one at a time in id order: the step decodes
outside any transaction and writes under the row's lock, as it does for
an upload. A file that fails is recorded failed by the step, with its
reason, and is no longer pending; one the step skips (deleted, infected
meanwhile) stops matching too. The pass is one phase with the run's budget
(MAINTENANCE_RUN_BUDGET_SECONDS); what it leaves, the next run resumes.

Counts: `renditions_made` and `renditions_failed` (a dry run counts the
pending files as `renditions_made`, and decodes nothing).
"""

from __future__ import annotations

import json

from sqlalchemy import text

from db.engine import session_scope
from db.models import File, FileProcessingStatus
from veza.files import pipeline
from veza.maintenance.run import Run
from veza.media import renditions
from veza.settings import get_settings

# The failure of a type the step did not read when it ran.
UNREAD_TYPE = "unsupported image format "
PENDING = (
    "virus_scan_status = 'clean' AND mime_type = ANY(:types)"
    " AND (metadata->'rendition_sizes') IS DISTINCT FROM CAST(:sizes AS jsonb)"
    " AND (processing_status <> 'failed' OR metadata->>'failure_reason' LIKE :unread)"
)
BATCH = 50


def backfill(run: Run) -> None:
    """Every pending file, oldest first, through the renditions step."""
    params = {
        "types": sorted(renditions.RENDERED_TYPES),
        "sizes": json.dumps(list(get_settings().rendition_sizes)),
        "unread": f"{UNREAD_TYPE}%",
    }
    with run.phase("renditions", left=1):
        with session_scope() as session:
            pending: int = session.execute(
                text(f"SELECT count(*) FROM files WHERE {PENDING}"), params
            ).scalar_one()
        if run.dry_run:
            run.add(renditions_made=pending)
            return
        run.add(renditions_made=0, renditions_failed=0)  # reported even when none was pending
        run.expect(pending, of="renditions_made")
        after = 0
        while not run.out_of_time:
            with session_scope() as session:
                ids = session.scalars(
                    text(
                        f"SELECT id FROM files WHERE {PENDING} AND id > :after ORDER BY id LIMIT :n"
                    ),
                    {**params, "after": after, "n": BATCH},
                ).all()
            if not ids:
                return
            for file_id in ids:
                _render(run, file_id)
                run.progress()
            after = ids[-1]


def _render(run: Run, file_id: int) -> None:
    _reopen_if_its_type_was_unread(file_id)
    pipeline.thumbnail(file_id)
    pipeline.finish(file_id)  # completes a reopened file; nothing for the others
    with session_scope() as session:
        file = session.get(File, file_id)
    if file is not None and pipeline.has_current_renditions(file):
        run.add(renditions_made=1)
    elif file is not None and file.processing_status is FileProcessingStatus.failed:
        run.add(renditions_failed=1)


def _reopen_if_its_type_was_unread(file_id: int) -> None:
    """A file failed for its type alone goes back to `processing`, its
    failure record gone, for the step to read it now."""
    with session_scope() as session:
        file = session.get(File, file_id, with_for_update=True)
        reason = file.meta.get("failure_reason", "") if file is not None else ""
        if file is None or not str(reason).startswith(UNREAD_TYPE):
            return
        file.processing_status = FileProcessingStatus.processing
        file.is_processed = False
        file.meta = {
            k: v for k, v in file.meta.items() if k not in ("failed_step", "failure_reason")
        }
