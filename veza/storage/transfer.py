"""Moving a local store into a bucket: `veza storage migrate --to s3`.

Paths are the same in both stores (veza/storage/backend.py), so no row
changes: every file under the local store's kept directories is put at the
same path in the bucket, and then STORAGE_BACKEND=s3 serves them.

Idempotent and resumable: the bucket is listed first, and a file already
there with the same size is skipped (objects appear whole, so a present
object of the right size is the file; a copy cut off mid-way left nothing
or an unfinished multipart upload, which the orphan sweep's debris step
aborts). Run it as often as needed: while the system runs on the local
store (it copies the bulk), then once more with the writers stopped (it
copies only what came since), then switch. Nothing local is removed: the
operator removes the directory once the bucket serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from db.engine import session_scope
from veza import audit
from veza.progress import ProgressReport, Throttled
from veza.storage.local import LocalStorage, files_older_than
from veza.storage.s3 import TRANSFER_ERRORS, S3Storage

log = logging.getLogger(__name__)

# What a row can name (tmp/ holds only files being written).
KEPT = ("blobs", "thumbs", "quarantine", "uploads")


@dataclass
class Migration:
    files_total: int = 0
    bytes_total: int = 0
    copied: int = 0
    bytes_copied: int = 0
    already_there: int = 0
    dry_run: bool = False
    failed: list[str] = field(default_factory=list)


def local_files(source: LocalStorage) -> Iterator[tuple[str, Path]]:
    # Every file written before now: the whole store as it is at the start.
    for directory in KEPT:
        for path in files_older_than(source.absolute(directory), time.time() + 1):
            yield str(path.relative_to(source.root)), path


def migrate_to_s3(
    source: LocalStorage, target: S3Storage, report: ProgressReport, dry_run: bool = False
) -> Migration:
    """Put every local file the bucket lacks, reporting progress at most
    once a second; a file that fails is named in `failed` (the next run
    tries it again) and the rest go on. Audited as storage.migrated."""
    present = {relative: size for relative, size, _ in target.listing(KEPT)}
    todo = [(relative, path, path.stat().st_size) for relative, path in local_files(source)]
    done = Migration(len(todo), sum(size for _, _, size in todo), dry_run=dry_run)
    progress = Throttled(report)
    for relative, path, size in todo:
        if present.get(relative) == size:
            done.already_there += 1
        elif not dry_run:
            try:
                target.put_file(path, relative)
            except TRANSFER_ERRORS as exc:
                log.warning("storage migrate: %s not copied: %s", relative, exc)
                done.failed.append(relative)
                continue
            done.copied += 1
            done.bytes_copied += size
        progress(asdict(done))
    progress(asdict(done), force=True)
    if not dry_run:
        with session_scope() as session:
            audit.record(
                session,
                "storage.migrated",
                {"to": target.describe(), **asdict(done), "failed": done.failed[:100]},
            )
    return done
