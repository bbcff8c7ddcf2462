"""Blob storage: one interface (backend.py), a directory (local.py) or a
bucket (s3.py), chosen by STORAGE_BACKEND. Everything else asks
`get_storage()` for the store and never knows which one it is."""

from __future__ import annotations

import os

from veza.settings import Settings, get_settings
from veza.storage.backend import (
    ContentMissing,
    EmptyUpload,
    Storage,
    StorageFull,
    StorageUnavailable,
    StoredObject,
    UploadTooLarge,
)
from veza.storage.local import LocalStorage
from veza.storage.s3 import S3Storage

__all__ = [
    "ContentMissing",
    "EmptyUpload",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StorageFull",
    "StorageUnavailable",
    "StoredObject",
    "UploadTooLarge",
    "get_storage",
]

# The store of the current settings, made in this process: a boto3 client
# (and its connection pool) must not cross a fork, so a Celery pool child
# makes its own rather than inheriting its parent's.
_made: tuple[Settings, int, Storage] | None = None


def get_storage() -> Storage:
    global _made
    settings = get_settings()
    if _made is None or _made[0] is not settings or _made[1] != os.getpid():
        _made = (settings, os.getpid(), storage_for(settings))
    return _made[2]


def storage_for(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        return S3Storage(settings)
    return LocalStorage(settings.storage_dir)
