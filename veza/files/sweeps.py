"""File expiry and the storage sweep.

Order of operations, for kill-safety: a row is deleted (committed) before
its blob is removed, never the other way round, so a kill can leave an
unreferenced blob (the orphan sweep removes it later) but never a row
pointing at nothing.

What counts as a reference: a blob `blobs/../<sha256>` or a thumbnail
`thumbs/<sha256>.webp` is referenced while any row of `files` or
`archived_files` (restorable attachments of archived messages) has that
hash; an upload `uploads/<uuid>` while a row has that uuid. Quarantined
content follows the same rule: it is kept (as evidence) while a live or
archived row holds its hash, and removed with the rest of that hash's
content (pipeline.delete_content_if_unreferenced) once an expiry purge
drops the last such row. The orphan sweep does not walk `quarantine/`.
Debris (a dead writer's file in tmp/ or scratch space, an unfinished
multipart upload in a bucket) is nothing a row can reference: the store
removes it once older than the grace (Storage.remove_debris).

The same sweeps run on either store (veza/storage/): a bucket is listed a
page at a time, as a directory is walked.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from db.engine import session_scope
from db.models import File
from veza.files.pipeline import delete_content_if_unreferenced, record_failure
from veza.maintenance.batched import KeysetBatches
from veza.maintenance.run import Run
from veza.settings import get_settings
from veza.storage import get_storage

log = logging.getLogger(__name__)

SWEEP_CHUNK = 500
SWEPT_DIRECTORIES = ("blobs", "thumbs", "uploads")
SHA256 = re.compile(r"[0-9a-f]{64}")
# A rendition's name (veza/storage/backend.py), or a thumbnail's from before.
RENDITION = re.compile(r"(?P<sha256>[0-9a-f]{64})(?:-\d+(?:-animated)?)?\.webp")


def purge_expired(run: Run) -> None:
    """Rows past expires_at go, then their blob and thumbnail once no other
    row holds the hash. A loop of its own, not KeysetBatches (whose caller
    works inside the batch's transaction): the blobs may go only once the
    rows' deletion has committed."""
    after = 0
    for size in run.batches():
        with session_scope() as session:
            if run.dry_run:
                rows = session.execute(
                    text(
                        "SELECT id, file_hash, file_path, thumbnail_path FROM files"
                        " WHERE expires_at < now() AND id > :after ORDER BY id LIMIT :size"
                    ),
                    {"after": after, "size": size},
                ).all()
            else:
                rows = session.execute(
                    text(
                        "DELETE FROM files WHERE id IN (SELECT id FROM files"
                        "  WHERE expires_at < now() AND id > :after ORDER BY id LIMIT :size"
                        "  FOR UPDATE SKIP LOCKED)"
                        " RETURNING id, file_hash, file_path, thumbnail_path"
                    ),
                    {"after": after, "size": size},
                ).all()
        if not rows:
            return
        after = max(row.id for row in rows)
        run.add(expired_files=len(rows))
        if not run.dry_run:
            storage = get_storage()
            paths = {p for row in rows for p in (row.file_path, row.thumbnail_path) if p}
            paths |= {storage.blob_path(row.file_hash) for row in rows if row.file_hash}
            run.add(blobs_removed=remove_unreferenced(sorted(paths)))


def sweep_orphans(run: Run, grace_seconds: int | None = None) -> None:
    """Remove stored content that no row references and that is older than
    the grace period (an upload's row may not be committed yet), then the
    debris older than the same grace."""
    grace = get_settings().orphan_grace_seconds if grace_seconds is None else grace_seconds
    older_than = time.time() - grace
    chunk: list[str] = []
    for relative in get_storage().stored_paths_older_than(SWEPT_DIRECTORIES, older_than):
        chunk.append(relative)
        if len(chunk) == SWEEP_CHUNK:
            sweep_chunk(run, chunk)
            chunk = []
    if chunk:
        sweep_chunk(run, chunk)
    sweep_tmp(run, older_than)


def sweep_tmp(run: Run, older_than: float) -> None:
    """A temporary file lives no longer than its writer: an upload's
    request, or a file task within its hard time limit (FILE_TIME_LIMITS,
    6 minutes), far inside the default grace. One untouched since
    `older_than` belongs to a writer that died (a killed worker, an upload
    cut off with its process). Counted as tmp_removed."""
    run.add(tmp_removed=get_storage().remove_debris(older_than, run.dry_run))
    run.progress()


def sweep_chunk(run: Run, paths: list[str]) -> None:
    if run.dry_run:
        run.add(orphans_removed=len(unreferenced(paths)))
    else:
        run.add(orphans_removed=remove_unreferenced(paths))
    run.progress()


def reference_key(relative: str) -> tuple[str, str] | None:
    """What a row would hold for this stored path: ("hash", sha256) or
    ("uuid", uuid); None for a name we do not recognise (left alone)."""
    name = Path(relative).name
    top = relative.split("/", 1)[0]
    if top == "blobs" and SHA256.fullmatch(name):
        return "hash", name
    if top == "thumbs" and (rendition := RENDITION.fullmatch(name)):
        return "hash", rendition["sha256"]
    if top == "uploads":
        try:
            return "uuid", str(uuid.UUID(name))
        except ValueError:
            return None
    return None


def unreferenced(paths: list[str]) -> list[str]:
    keyed = {path: reference_key(path) for path in paths}
    hashes = [key[1] for key in keyed.values() if key and key[0] == "hash"]
    uuids = [key[1] for key in keyed.values() if key and key[0] == "uuid"]
    with session_scope() as session:
        held = set(
            session.execute(
                text(
                    "SELECT h FROM unnest(CAST(:hashes AS text[])) h"
                    " WHERE EXISTS (SELECT 1 FROM files f WHERE f.file_hash = h)"
                    " OR EXISTS (SELECT 1 FROM archived_files a WHERE a.file_hash = h)"
                    " UNION ALL"
                    " SELECT u::text FROM unnest(CAST(:uuids AS uuid[])) u"
                    " WHERE EXISTS (SELECT 1 FROM files f WHERE f.uuid = u)"
                    " OR EXISTS (SELECT 1 FROM archived_files a WHERE a.uuid = u)"
                ),
                {"hashes": hashes, "uuids": uuids},
            ).scalars()
        )
    return [path for path, key in keyed.items() if key and key[1] not in held]


def remove_unreferenced(paths: list[str]) -> int:
    """Remove what `unreferenced` finds; a hash's content goes through
    pipeline.delete_content_if_unreferenced, which checks again under the
    content lock (a new upload of the same bytes may have just claimed it).
    Returns how many contents and uploads were removed."""
    # unreferenced() returns only the paths it has a key for.
    doomed = [(path, key) for path in unreferenced(paths) if (key := reference_key(path))]
    hashes = sorted({key[1] for _, key in doomed if key[0] == "hash"})
    removed = sum(delete_content_if_unreferenced(sha256) for sha256 in hashes)
    storage = get_storage()
    for path, key in doomed:
        if key[0] == "uuid" and storage.exists(path):
            storage.remove(path)
            removed += 1
    return removed


def fail_rows_with_missing_blobs(run: Run, grace_seconds: int | None = None) -> None:
    """A row whose stored content is gone can never be served: mark it
    failed with the reason, and report it (counts, and a warning per row).
    Rows younger than the grace period may still be moving their content."""
    grace = get_settings().orphan_grace_seconds if grace_seconds is None else grace_seconds
    batches = KeysetBatches(
        run,
        (
            "SELECT id, file_path FROM files"
            " WHERE {after} AND processing_status <> 'failed'"
            " AND created_at < now() - make_interval(secs => :grace)"
            " ORDER BY {key} LIMIT :size"
        ),
        {"grace": grace},
        initial=1000,
    )
    storage = get_storage()
    for session, rows in batches:
        # One HEAD per row on a bucket: a batch of 1,000 costs a second or two.
        missing = [row for row in rows if not storage.exists(row.file_path)]
        run.add(blobs_missing=len(missing))
        for row in missing:
            log.warning(
                "file %d: stored content %s is missing; marked failed", row.id, row.file_path
            )
        if run.dry_run:
            continue
        for row in missing:
            file = session.get(File, row.id, with_for_update=True)
            if file is not None and file.file_path == row.file_path:  # not moved meanwhile
                record_failure(file, "storage", f"stored content missing: {row.file_path}")
