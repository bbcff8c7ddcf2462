"""Blob storage on a local directory, behind one small interface, so that a
shared object store can replace it when workers span machines.

Layout under STORAGE_DIR:
  uploads/<file uuid>        an upload as received, before it is hashed
  blobs/<aa>/<bb>/<sha256>   content-addressed blobs, one per distinct content
  thumbs/<sha256>.webp       thumbnails, one per distinct content
  quarantine/<sha256>        infected content, outside the served tree

Paths stored in the database are relative to STORAGE_DIR.
"""

from __future__ import annotations

import os
import uuid
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


storage = LocalStorage()
