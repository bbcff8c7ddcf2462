"""What every blob store offers the rest of the code: one interface, two
implementations (veza/storage/local.py, a directory; veza/storage/s3.py, a
bucket of an S3-compatible store).

Layout, as paths relative to the store (a directory's files, a bucket's
keys after S3_PREFIX); the database stores these paths, so they mean the
same thing in either store and moving from one to the other
(veza/storage/transfer.py) changes no row:
  uploads/<file uuid>        an upload as received, before it is hashed
  blobs/<aa>/<bb>/<sha256>   content-addressed blobs, one per distinct content
  thumbs/<sha256>-<size>[-animated].webp
                             renditions, per distinct content and size
                             (thumbs/<sha256>.webp: a thumbnail made before
                             renditions, until the backfill replaces it)
  quarantine/<sha256>        infected content, outside the served tree

Blobs and thumbnails are named by content, so writing one is idempotent: a
second writer of the same content finds it present and keeps the first.
Whoever creates, quarantines or deletes a hash's content holds the
PostgreSQL advisory lock on that hash (veza/files/pipeline.py, lock_content),
on every machine: the lock, not the store, makes deletion refcount-safe, so
both stores get the same guarantee from it.

A full store (ENOSPC, a quota) raises StorageFull, with nothing left behind:
the API answers 507, a worker step retries later.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from veza.settings import get_settings

# The unit the stores read, write and stream in.
CHUNK_SIZE = 1024 * 1024

# Called with each chunk of bytes fetched from the store, as it arrives.
OnChunk = Callable[[bytes], None]


class UploadTooLarge(Exception):
    pass


class EmptyUpload(Exception):
    pass


class StorageFull(Exception):
    """No space (or quota) left to write: an operational condition that
    passes once space is freed, never the input's fault."""


class ContentMissing(FileNotFoundError):
    """Nothing is stored under this path."""


class StorageUnavailable(Exception):
    """The store cannot be reached or answers with an error of its own (a
    bucket's 5xx, a connection refused, a timeout): it passes, and the work
    is retried; never a verdict on the file."""


@dataclass
class StoredObject:
    """An open stored object: its bytes as a stream, and how many there are."""

    stream: IO[bytes]
    size: int


class Storage(ABC):
    """The blob store: the layout (paths), and what the pipeline, the API and
    the sweeps do with it."""

    def upload_path(self, file_uuid: uuid.UUID) -> str:
        return f"uploads/{file_uuid}"

    def blob_path(self, sha256: str) -> str:
        return f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def rendition_path(self, sha256: str, size: int, animated: bool) -> str:
        return f"thumbs/{sha256}-{size}{'-animated' if animated else ''}.webp"

    def rendition_paths(self, sha256: str) -> list[str]:
        """Every rendition this content may have: of each configured size,
        still and animated, and the thumbnail of before renditions. One
        made under sizes no longer configured is left to the orphan sweep
        (once no row holds the content)."""
        sizes = get_settings().rendition_sizes
        made = [
            self.rendition_path(sha256, size, animated)
            for size in sizes
            for animated in (False, True)
        ]
        return [f"thumbs/{sha256}.webp", *made]

    def quarantine_path(self, sha256: str) -> str:
        return f"quarantine/{sha256}"

    def content_path(self, sha256: str) -> str | None:
        """Where the content with this hash is kept now: its blob, or its
        quarantined copy, or None if neither exists."""
        for relative in (self.blob_path(sha256), self.quarantine_path(sha256)):
            if self.exists(relative):
                return relative
        return None

    @contextmanager
    def content_copy(self, sha256: str, on_chunk: OnChunk | None = None) -> Iterator[Path]:
        """local_copy of this hash's content wherever it is kept now (its
        blob, or its quarantined copy), for the steps that read the bytes
        of a hash: they need them, not where they are."""
        with ExitStack() as stack:
            for relative in (self.blob_path(sha256), self.quarantine_path(sha256)):
                try:
                    path = stack.enter_context(self.local_copy(relative, on_chunk))
                    break
                except ContentMissing:
                    continue
            else:
                raise ContentMissing(sha256)
            yield path

    def remove_content(self, sha256: str) -> None:
        """Remove everything kept for this hash: blob, quarantined copy,
        renditions. The caller holds the hash's content lock and has checked
        that no row references it (pipeline.delete_content_if_unreferenced)."""
        for relative in (
            self.blob_path(sha256),
            self.quarantine_path(sha256),
            *self.rendition_paths(sha256),
        ):
            self.remove(relative)

    @abstractmethod
    def describe(self) -> str:
        """Where this store is, for operators' log lines."""

    @abstractmethod
    def save_upload(self, stream: IO[bytes], file_uuid: uuid.UUID, limit: int) -> tuple[str, int]:
        """Stream an upload to uploads/<uuid>, counting as it goes, never
        holding it whole in memory; returns its path and size, durable. Over
        `limit` bytes, empty, or a full store: nothing is left behind and
        UploadTooLarge, EmptyUpload or StorageFull is raised."""

    @abstractmethod
    def exists(self, relative: str) -> bool: ...

    @abstractmethod
    def remove(self, relative: str) -> None:
        """Idempotent: removing what is not there is no error."""

    @abstractmethod
    def open(self, relative: str) -> StoredObject:
        """The stored bytes as an open stream, which the caller closes (a
        `with` on it, or the WSGI server's file wrapper); ContentMissing if
        there are none."""

    @abstractmethod
    def local_copy(
        self, relative: str, on_chunk: OnChunk | None = None
    ) -> AbstractContextManager[Path]:
        """A path on this machine holding the stored bytes, for the readers
        that need a file (libmagic, clamd, the archive inspection, Pillow),
        valid until the block ends; ContentMissing if there are none.
        Bytes fetched from elsewhere to make it are handed to `on_chunk` as
        they arrive (the scan streams them to clamd); bytes already on this
        machine are not."""

    @abstractmethod
    def atomic_writer(self, relative: str) -> AbstractContextManager[BinaryIO]:
        """A stream whose content appears at `relative` only once the block
        ends without error, whole: readers never see part of it, and a
        failure leaves nothing under the name."""

    @abstractmethod
    def promote_upload(self, upload: str, sha256: str, known: str | None) -> str:
        """Make an upload's content available under its hash; returns the
        content's path (its blob, or its quarantined copy if that content
        was found infected before), durable. `known` is where a row already
        holding the hash says its content is, None when no row does. The
        upload stays in place: the caller removes it once the row naming the
        blob has committed, so a crash in between leaves it for a retry.
        Under the content lock."""

    @abstractmethod
    def quarantine(self, sha256: str) -> str:
        """Move content out of the served tree (blobs/) into quarantine/.
        Idempotent: returns the quarantine path whether the move happens now
        or happened before. Under the content lock."""

    @abstractmethod
    def stored_paths_older_than(
        self, directories: tuple[str, ...], older_than: float
    ) -> Iterator[str]:
        """Every stored path under these top-level directories last written
        before `older_than` (a POSIX time), for the orphan sweep."""

    @abstractmethod
    def remove_debris(self, older_than: float, dry_run: bool) -> int:
        """Remove what writers that died left behind (a half-written file
        in scratch space, an unfinished multipart upload) untouched since
        `older_than`: no row can name it. Returns how many went (or would)."""
