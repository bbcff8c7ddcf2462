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
(veza/files/pipeline.py checks the rows first).

Durability: every method that returns a path for the caller to record has
made it survive a power loss first (`_fsync`, `_sync_directories`): the
content is fsynced before it gets its final name, and the directories that
hold the name after. Without that a committed row can point at a
zero-length file or at a name the filesystem forgot.

A full disk (ENOSPC, or a quota: EDQUOT) raises StorageFull, with nothing
left behind: the API answers 507, a worker step retries later.
"""

from __future__ import annotations

import errno
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, BinaryIO

from veza.settings import get_settings

CHUNK_SIZE = 1024 * 1024


class UploadTooLarge(Exception):
    pass


class EmptyUpload(Exception):
    pass


class StorageFull(Exception):
    """No space (or quota) left to write: an operational condition that
    passes once space is freed, never the input's fault."""


FULL_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def _full_disk_as_storage_full() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in FULL_DISK_ERRORS:
            raise StorageFull(f"storage is full: {exc.strerror}") from exc
        raise


def _fsync(path: Path) -> None:
    """fsync by path: a file's content and inode, or a directory's entries.
    The one place storage calls fsync (tests inject its failures here)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or get_settings().storage_dir)

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

    def save_upload(self, stream: IO[bytes], file_uuid: uuid.UUID, limit: int) -> tuple[str, int]:
        """Stream an upload to uploads/<uuid>, counting as it goes.

        Written through atomic_writer, so a partial upload only ever exists
        in tmp/ and is durable once this returns (the row that points at it
        is about to be committed). Over `limit` bytes, empty, or a full
        disk: nothing is left behind and UploadTooLarge, EmptyUpload or
        StorageFull is raised.
        """
        relative = self.upload_path(file_uuid)
        size = 0
        with self.atomic_writer(relative) as out:
            while chunk := stream.read(CHUNK_SIZE):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(f"upload exceeds {limit} bytes")
                out.write(chunk)
            if size == 0:
                raise EmptyUpload("upload is empty")
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
        found infected before), durable.

        The upload is hard-linked to the blob path, not renamed, so that a
        crash before the caller commits the new path leaves the upload in
        place for a retry. The caller removes the upload after committing.
        Content found already there is synced too: a writer that died
        between its link and its fsyncs left a name that may not survive.
        """
        with _full_disk_as_storage_full():
            existing = self.content_path(sha256)
            if existing is not None:
                self._sync_file_and_directories(self.absolute(existing))
                return existing
            relative = self.blob_path(sha256)
            target = self.absolute(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = self.absolute(upload)
            _fsync(source)  # the content, before the blob name can point at it
            # FileExistsError: an identical upload got there first: same bytes, keep one.
            with suppress(FileExistsError):
                os.link(source, target)
            self._sync_file_and_directories(target)
        return relative

    def quarantine(self, sha256: str) -> str:
        """Move content out of the served tree (blobs/) into quarantine/,
        readable only by its owner, durably. Idempotent: returns the
        quarantine path whether the move happens now or happened before."""
        relative = self.quarantine_path(sha256)
        target = self.absolute(relative)
        blob = self.absolute(self.blob_path(sha256))
        with _full_disk_as_storage_full():
            target.parent.mkdir(parents=True, exist_ok=True)
            if blob.exists():
                os.replace(blob, target)
                os.chmod(target, 0o400)
            # Synced on every call, not only by the one that moved it: a
            # mover that died before its fsyncs left names a power loss may undo.
            if target.exists():
                self._sync_file_and_directories(target)
            if blob.parent.exists():
                _fsync(blob.parent)  # the served tree no longer names it
        return relative

    @contextmanager
    def atomic_writer(self, relative: str) -> Iterator[BinaryIO]:
        """A stream whose content appears at `relative` only once the block
        ends without error (written under tmp/, fsynced, renamed, its
        directories synced), so readers never see a half-written file, a
        failure leaves nothing, a power loss after the block cannot leave
        an empty file under the name, and a process killed mid-write leaves
        its debris in tmp/ only (swept by the maintenance orphan sweep)."""
        target = self.absolute(relative)
        scratch = self.absolute("tmp")
        with _full_disk_as_storage_full():
            target.parent.mkdir(parents=True, exist_ok=True)
            scratch.mkdir(exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=scratch)
            try:
                with os.fdopen(fd, "wb") as out:
                    yield out
                _fsync(Path(temporary))
                os.replace(temporary, target)
                self._sync_directories(target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise

    def _sync_file_and_directories(self, path: Path) -> None:
        _fsync(path)
        self._sync_directories(path)

    def _sync_directories(self, path: Path) -> None:
        """fsync every directory from the one holding `path` up to the
        storage root: a new name is durable once its directory is, and a
        directory made for it (blobs/aa/bb) once its parent is. A directory
        with nothing new to write costs tens of microseconds."""
        for directory in path.parents:
            _fsync(directory)
            if directory == self.root:
                return

    def remove_content(self, sha256: str) -> None:
        """Remove everything kept for this hash: blob, quarantined copy,
        thumbnail."""
        for relative in (
            self.blob_path(sha256),
            self.quarantine_path(sha256),
            self.thumbnail_path(sha256),
        ):
            self.remove(relative)


storage = LocalStorage()
