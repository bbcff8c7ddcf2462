"""Blob storage on a local directory, behind one small interface, so that a
shared object store can replace it when workers span machines.

Layout under STORAGE_DIR:
  uploads/<file uuid>        an upload as received, before it is hashed
  blobs/<aa>/<bb>/<sha256>   content-addressed blobs, one per distinct content
  thumbs/<sha256>.webp       thumbnails, one per distinct content
  quarantine/<sha256>        infected content, outside the served tree
  tmp/                       files being written, renamed into place when whole

Paths stored in the database are relative to STORAGE_DIR. Blobs and
thumbnails are named by content, so writing one is idempotent: a second
writer of the same content finds it present and keeps the first. Deleting
content that rows may still reference is the caller's decision
(worker/file_steps.py checks the rows first).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from worker.config import settings

CHUNK_SIZE = 1024 * 1024


class UploadTooLarge(Exception):
    pass


class EmptyUpload(Exception):
    pass


class LocalStorage:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or settings.storage_dir)

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def upload_path(self, file_uuid: uuid.UUID) -> str:
        return f"uploads/{file_uuid}"

    def blob_path(self, sha256: str) -> str:
        return f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def thumbnail_path(self, sha256: str) -> str:
        return f"thumbs/{sha256}.webp"

    def quarantine_path(self, sha256: str) -> str:
        return f"quarantine/{sha256}"

    def save_upload(self, stream: BinaryIO, file_uuid: uuid.UUID, limit: int) -> tuple[str, int]:
        """Stream an upload to uploads/<uuid>, counting as it goes.

        Over `limit` bytes or empty: the partial file is removed and
        UploadTooLarge or EmptyUpload is raised, so nothing is left behind.
        The file is fsynced before returning: the row that points at it is
        about to be committed.
        """
        relative = self.upload_path(file_uuid)
        target = self.absolute(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        try:
            with open(target, "xb") as out:
                while chunk := stream.read(CHUNK_SIZE):
                    size += len(chunk)
                    if size > limit:
                        raise UploadTooLarge(f"upload exceeds {limit} bytes")
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size == 0:
                raise EmptyUpload("upload is empty")
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return relative, size

    def remove(self, relative: str) -> None:
        self.absolute(relative).unlink(missing_ok=True)

    def exists(self, relative: str) -> bool:
        return self.absolute(relative).exists()

    def content_path(self, sha256: str) -> str | None:
        """Where the content with this hash is kept now: its blob, or its
        quarantined copy, or None if neither exists."""
        for relative in (self.blob_path(sha256), self.quarantine_path(sha256)):
            if self.exists(relative):
                return relative
        return None

    def promote_upload(self, upload: str, sha256: str) -> str:
        """Make an upload's content available under its hash; returns the
        content's path (its blob, or its quarantined copy if that content was
        found infected before).

        The upload is hard-linked to the blob path, not renamed, so that a
        crash before the caller commits the new path leaves the upload in
        place for a retry. The caller removes the upload after committing.
        """
        existing = self.content_path(sha256)
        if existing is not None:
            return existing
        relative = self.blob_path(sha256)
        target = self.absolute(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.absolute(upload), target)
        except FileExistsError:
            pass  # an identical upload got there first: same bytes, keep one
        return relative

    def quarantine(self, sha256: str) -> str:
        """Move content out of the served tree (blobs/) into quarantine/,
        readable only by its owner. Idempotent: returns the quarantine path
        whether the move happens now or happened before."""
        relative = self.quarantine_path(sha256)
        target = self.absolute(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        blob = self.absolute(self.blob_path(sha256))
        if blob.exists():
            os.replace(blob, target)
            os.chmod(target, 0o400)
        return relative

    @contextmanager
    def atomic_writer(self, relative: str) -> Iterator[BinaryIO]:
        """A stream whose content appears at `relative` only once the block
        ends without error (written under tmp/, then renamed), so readers
        never see a half-written file, a failure leaves nothing, and a
        process killed mid-write leaves its debris in tmp/ only."""
        target = self.absolute(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.absolute("tmp")
        scratch.mkdir(exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=scratch)
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def remove_content(self, sha256: str) -> None:
        """Remove everything kept for this hash: blob, quarantined copy,
        thumbnail."""
        for relative in (
            self.blob_path(sha256), self.quarantine_path(sha256), self.thumbnail_path(sha256)
        ):
            self.remove(relative)


storage = LocalStorage()
