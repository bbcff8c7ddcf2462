"""The S3 blob store: a bucket of an S3-compatible object store (AWS S3,
SeaweedFS, MinIO, Ceph...), through boto3, so that workers on many machines
share their blobs with no shared filesystem. The layout is the interface's
(veza/storage/backend.py), each path a key under S3_PREFIX.

What differs from a directory, and how each is covered:
- Whole objects only: a PUT, a copy, a completed multipart upload appears
  whole or not at all, so nothing needs the local store's tmp/ and rename.
  An upload cut off mid-way leaves an unfinished multipart upload, which
  remove_debris aborts once it is older than the grace.
- No hard links: an upload becomes its blob by a server-side copy (the bytes
  never come back through the worker); the upload is deleted after the
  row's commit, as on disk.
- Readers that need a file (libmagic, clamd, the archive inspection,
  Pillow) get a copy in scratch space, STORAGE_DIR/tmp, removed when the
  step ends: the only thing a worker writes to its own disk.
- Deletion is made safe by the same PostgreSQL advisory lock on the hash as
  on disk (pipeline.lock_content), which every machine takes.

Memory: uploads go up in MULTIPART_PART_BYTES parts, one at a time, so a
100 MB upload costs one part of memory, not the file.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, cast

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from veza.settings import Settings
from veza.storage.backend import (
    CHUNK_SIZE,
    ContentMissing,
    EmptyUpload,
    OnChunk,
    Storage,
    StorageFull,
    StorageUnavailable,
    StoredObject,
    UploadTooLarge,
)
from veza.storage.local import remove_files_older_than
from veza.storage.scratch_cache import ScratchCache

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# S3's smallest part is 5 MiB; 8 MiB is boto3's default. One part at a time
# (no threads): an upload's memory is one part, whatever the file's size.
MULTIPART_PART_BYTES = 8 * 1024 * 1024
UPLOADS = TransferConfig(
    multipart_threshold=MULTIPART_PART_BYTES,
    multipart_chunksize=MULTIPART_PART_BYTES,
    use_threads=False,
)
# Keys a listing page holds: S3's own maximum.
LIST_PAGE_SIZE = 1000
# What a transfer can fail with: the store's refusal, the store out of
# reach, the local file.
TRANSFER_ERRORS = (ClientError, StorageUnavailable, StorageFull, OSError)
MISSING = {"404", "NoSuchKey", "NotFound"}
# What a store says when it is out of space or over a quota: the condition
# StorageFull stands for (a worker retries, the API answers 507).
FULL = {"QuotaExceeded", "InsufficientStorage", "NoSpaceLeft"}


def client_for(settings: Settings) -> S3Client:
    """A boto3 S3 client for the settings' endpoint and credentials (unset
    keys: boto3's own chain). Retries in boto3's standard mode; timeouts
    bounded so that a hung store fails a step instead of hanging it."""
    secret = settings.s3_secret_access_key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            # SigV4 for presigned URLs too (boto3 presigns with SigV2 unless
            # told): every store takes it, and SigV2 signs the response-*
            # overrides in a way some servers check differently.
            signature_version="s3v4",
            # Checksums only where S3 requires them (boto3's default before
            # 1.36): every object is hashed by its content already, the
            # transport is TCP, and not every S3-compatible server checks
            # the newer ones.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": settings.s3_addressing_style},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class _Counted:
    """The upload stream as boto3 reads it: its first chunk (read already,
    to know it is not empty) put back in front, counted, and refused past
    the limit before the part that crosses it is sent."""

    def __init__(self, first: bytes, rest: IO[bytes], limit: int) -> None:
        self.first = first
        self.rest = rest
        self.limit = limit
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._read(size)
        self.size += len(chunk)
        if self.size > self.limit:
            raise UploadTooLarge(f"upload exceeds {self.limit} bytes")
        return chunk

    def _read(self, size: int) -> bytes:
        if not self.first:
            return self.rest.read(size)
        if size < 0:
            head, self.first = self.first, b""
            return head + self.rest.read()
        head, self.first = self.first[:size], self.first[size:]
        if len(head) < size:
            head += self.rest.read(size - len(head))
        return head


class S3Storage(Storage):
    def __init__(self, settings: Settings) -> None:
        self.client = client_for(settings)
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.scratch = settings.storage_dir / "tmp"
        self.cache = ScratchCache(self.scratch / "cache", settings.s3_scratch_cache_mib << 20)
        self.endpoint = settings.s3_endpoint_url or "AWS"

    def describe(self) -> str:
        return f"S3 bucket {self.bucket} at {self.endpoint}, prefix {self.prefix!r}"

    def key(self, relative: str) -> str:
        return self.prefix + relative

    @contextmanager
    def _errors(self, relative: str) -> Iterator[None]:
        """A missing object is ContentMissing, a full store StorageFull, a
        store out of reach or failing (after boto3's own retries)
        StorageUnavailable; any other refusal (a wrong key, no such bucket)
        goes through as it is."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if code in MISSING:
                raise ContentMissing(relative) from exc
            if code in FULL:
                raise StorageFull(f"the bucket refused the write: {code}") from exc
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                raise StorageUnavailable(f"the bucket answered {code}") from exc
            raise
        except (BotoCoreError, S3UploadFailedError) as exc:
            raise StorageUnavailable(f"the bucket cannot be reached: {exc}") from exc

    def save_upload(self, stream: IO[bytes], file_uuid: uuid.UUID, limit: int) -> tuple[str, int]:
        """Empty is known from the first read, before any request; over the
        limit is known at the part that crosses it, and boto3 aborts the
        multipart upload, so no object appears."""
        relative = self.upload_path(file_uuid)
        first = stream.read(CHUNK_SIZE)
        if not first:
            raise EmptyUpload("upload is empty")
        counted = _Counted(first, stream, limit)
        with self._errors(relative):
            # boto3 needs only read() of it, as of a file.
            stream_of_counted = cast("IO[bytes]", counted)
            self.client.upload_fileobj(
                stream_of_counted, self.bucket, self.key(relative), Config=UPLOADS
            )
        return relative, counted.size

    def exists(self, relative: str) -> bool:
        try:
            with self._errors(relative):
                self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
        except ContentMissing:
            return False
        return True

    def remove(self, relative: str) -> None:
        with self._errors(relative):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(relative))
        self.cache.drop(relative)

    def open(self, relative: str) -> StoredObject:
        with self._errors(relative):
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(relative))
        # A StreamingBody is an io.IOBase with read() and close(): a file, read-only.
        return StoredObject(cast("IO[bytes]", response["Body"]), int(response["ContentLength"]))

    @contextmanager
    def local_copy(self, relative: str, on_chunk: OnChunk | None = None) -> Iterator[Path]:
        """This machine's cached copy if it has one (veza/storage/scratch_cache.py),
        else one GET streamed to disk, each chunk also to `on_chunk`, kept in
        the cache for the next step."""
        with self._scratch_file() as path:
            if not self.cache.copy_to(relative, path):
                stored = self.open(relative)
                with stored.stream as body, open(path, "wb") as out:
                    while chunk := body.read(CHUNK_SIZE):
                        out.write(chunk)
                        if on_chunk is not None:
                            on_chunk(chunk)
                self.cache.keep(path, relative)
            yield path

    @contextmanager
    def atomic_writer(self, relative: str) -> Iterator[BinaryIO]:
        """Written to scratch space, then put whole (a multipart upload
        above one part, completed only once every part is there)."""
        with self._scratch_file() as path:
            with open(path, "wb") as out:
                yield out
            self.put_file(path, relative)

    @contextmanager
    def _scratch_file(self) -> Iterator[Path]:
        """A file of this process's in scratch space, removed when the block
        ends; a process killed inside the block leaves it to remove_debris."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.scratch)
        os.close(fd)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def promote_upload(self, upload: str, sha256: str, known: str | None) -> str:
        """A server-side copy (at most 5 GB: the schema caps a file at
        100 MB). Content the rows know of is kept once a HEAD finds it
        there. With no row holding the hash there is nothing to keep, and
        the copy goes ahead without asking the bucket: whoever deletes
        content holds the lock we hold and found no row, so at most an
        orphan of the same bytes awaits the sweep, and a copy over it
        writes the same bytes."""
        if known is not None and self.exists(known):
            existing = known
        else:
            existing = self.blob_path(sha256)
            self._copy(upload, existing)
        self.cache.alias(upload, existing)
        return existing

    def quarantine(self, sha256: str) -> str:
        """Copied to quarantine/, then the blob deleted: a kill in between
        leaves both, and the next call (the scan is retried) finishes it."""
        relative = self.quarantine_path(sha256)
        blob = self.blob_path(sha256)
        if self.exists(blob):
            if not self.exists(relative):
                self._copy(blob, relative)
            self.remove(blob)
        return relative

    def _copy(self, source: str, target: str) -> None:
        with self._errors(source):
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self.key(target),
                CopySource={"Bucket": self.bucket, "Key": self.key(source)},
            )

    def stored_paths_older_than(
        self, directories: tuple[str, ...], older_than: float
    ) -> Iterator[str]:
        for relative, _size, modified in self.listing(directories):
            if modified < older_than:
                yield relative

    def listing(self, directories: tuple[str, ...]) -> Iterator[tuple[str, int, float]]:
        """(path, size, last written) of every object under these top-level
        directories, one listing page (LIST_PAGE_SIZE keys) at a time."""
        pages = self.client.get_paginator("list_objects_v2")
        for directory in directories:
            listing = pages.paginate(
                Bucket=self.bucket,
                Prefix=self.key(f"{directory}/"),
                PaginationConfig={"PageSize": LIST_PAGE_SIZE},
            )
            with self._errors(directory):
                for page in listing:
                    for item in page.get("Contents", []):
                        relative = item["Key"][len(self.prefix) :]
                        yield relative, item["Size"], item["LastModified"].timestamp()

    def put_file(self, path: Path, relative: str) -> None:
        """A local file stored whole at `relative` (in parts above one)."""
        with self._errors(relative):
            self.client.upload_file(str(path), self.bucket, self.key(relative), Config=UPLOADS)

    def remove_debris(self, older_than: float, dry_run: bool) -> int:
        """This machine's scratch files of dead steps, and the bucket's
        unfinished multipart uploads (an upload whose request died)."""
        removed = remove_files_older_than(self.scratch, older_than, dry_run)
        pages = self.client.get_paginator("list_multipart_uploads")
        with self._errors("uploads in progress"):
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() >= older_than:
                        continue
                    if not dry_run:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    removed += 1
        return removed

    def presigned_url(self, relative: str, content_type: str, disposition: str, ttl: int) -> str:
        """A GET of this object that needs no credentials for `ttl` seconds,
        answered with our Content-Type and Content-Disposition."""
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.key(relative),
                "ResponseContentType": content_type,
                "ResponseContentDisposition": disposition,
            },
            ExpiresIn=ttl,
        )
        return url
