"""The local blob store: a directory (STORAGE_DIR), for one machine or a
shared filesystem. The layout is the interface's (veza/storage/backend.py);
files being written live in tmp/ until they are whole, then are renamed
into place.

Durability: every method that returns a path for the caller to record has
made it survive a power loss first (`_fsync`, `_sync_directories`): the
content is fsynced before it gets its final name, and the directories that
hold the name after. Without that a committed row can point at a
zero-length file or at a name the filesystem forgot.
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

from veza.storage.backend import (
    CHUNK_SIZE,
    ContentMissing,
    EmptyUpload,
    OnChunk,
    Storage,
    StorageFull,
    StoredObject,
    UploadTooLarge,
)

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


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"STORAGE_DIR {self.root}"

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def save_upload(self, stream: IO[bytes], file_uuid: uuid.UUID, limit: int) -> tuple[str, int]:
        """Written through atomic_writer, so a partial upload only ever
        exists in tmp/ and is durable once this returns (the row that points
        at it is about to be committed)."""
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

    def open(self, relative: str) -> StoredObject:
        """An open file stays readable even if a concurrent run unlinks it."""
        try:
            content = open(self.absolute(relative), "rb")  # noqa: SIM115  (the caller closes it)
        except FileNotFoundError as exc:
            raise ContentMissing(relative) from exc
        return StoredObject(content, os.fstat(content.fileno()).st_size)

    @contextmanager
    def local_copy(self, relative: str, on_chunk: OnChunk | None = None) -> Iterator[Path]:
        """The stored file itself: it is on this machine already (nothing
        is fetched, so `on_chunk` hears nothing)."""
        path = self.absolute(relative)
        if not path.is_file():
            raise ContentMissing(relative)
        yield path

    def promote_upload(self, upload: str, sha256: str, known: str | None) -> str:
        """The disk is asked, not `known`: a look is a stat. The upload is
        hard-linked to the blob path, not renamed (the upload stays for a
        retry until the caller removes it).
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
        """Renamed, readable only by its owner, durably."""
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
        """Written under tmp/, fsynced, renamed, its directories synced: a
        power loss after the block cannot leave an empty file under the
        name, and a process killed mid-write leaves its debris in tmp/ only
        (remove_debris)."""
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

    def stored_paths_older_than(
        self, directories: tuple[str, ...], older_than: float
    ) -> Iterator[str]:
        for directory in directories:
            for path in files_older_than(self.absolute(directory), older_than):
                yield str(path.relative_to(self.root))

    def remove_debris(self, older_than: float, dry_run: bool) -> int:
        """tmp/ holds nothing a row can reference, only files being written:
        one untouched since `older_than` is a dead writer's."""
        return remove_files_older_than(self.absolute("tmp"), older_than, dry_run)


def files_older_than(root: Path, older_than: float) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                if path.stat().st_mtime < older_than:
                    yield path
            except FileNotFoundError:
                continue  # removed meanwhile


def remove_files_older_than(root: Path, older_than: float, dry_run: bool) -> int:
    removed = 0
    for path in files_older_than(root, older_than):
        if not dry_run:
            path.unlink(missing_ok=True)
        removed += 1
    return removed
