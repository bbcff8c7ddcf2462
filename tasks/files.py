"""The file pipeline as Celery tasks: thin wrappers over veza/files/pipeline.py.

`files.process` (enqueued by the API through the outbox) runs the whole
pipeline: it hashes and sniffs in place, then chains `files.scan` (on the
`scan` queue, so a slow clamd never holds up the `files` queue) and
`files.thumbnail` (back on `files`; task_routes in worker/celery_app.py).
Hash and sniff are short and sequential on the same queue: separate
messages for them cost more than the steps (measured in bench/files.py), so
`files.hash` and `files.sniff` exist to re-run one step on its own.
Every task takes the file id. A step on a large upload reports its phase
and bytes (worker/progress.py: Flower shows them while it runs).
"""

from __future__ import annotations

import logging
import random
import time

from celery import chain, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready

from veza import jobs, limits
from veza.clamav import ScanUnavailable
from veza.files import pipeline
from veza.settings import get_settings
from veza.storage import get_storage
from veza.storage.s3 import TRANSFER_ERRORS
from worker.base import VezaTask
from worker.progress import celery_progress

log = logging.getLogger(__name__)

FILE_LIMITS = {
    "soft_time_limit": limits.FILE_TIME_LIMITS[0],
    "time_limit": limits.FILE_TIME_LIMITS[1],
}
SCAN_LIMITS = {
    "soft_time_limit": limits.SCAN_TIME_LIMITS[0],
    "time_limit": limits.SCAN_TIME_LIMITS[1],
}


@shared_task(bind=True, base=VezaTask, name=jobs.PROCESS_FILE.name, **FILE_LIMITS)
def process(self: VezaTask, file_id: int) -> None:
    """Run the whole pipeline for one upload. Safe to call again (or twice
    at once): every step skips what is already done."""
    pipeline.hash_upload(file_id, task_id=self.request.id, report=celery_progress(self))
    pipeline.sniff(file_id, task_id=self.request.id)
    chain(scan.si(file_id), thumbnail.si(file_id)).apply_async()


@shared_task(bind=True, base=VezaTask, name=jobs.HASH_FILE.name, **FILE_LIMITS)
def hash_upload(self: VezaTask, file_id: int) -> None:
    pipeline.hash_upload(file_id, task_id=self.request.id, report=celery_progress(self))


@shared_task(bind=True, base=VezaTask, name=jobs.SNIFF_FILE.name, **FILE_LIMITS)
def sniff(self: VezaTask, file_id: int) -> None:
    pipeline.sniff(file_id, task_id=self.request.id)


@shared_task(bind=True, base=VezaTask, name=jobs.SCAN_FILE.name, **SCAN_LIMITS)
def scan(self: VezaTask, file_id: int) -> None:
    """Fail closed: while clamd gives no verdict the file stays `scanning`
    and the task retries with jittered exponential backoff; after the last
    retry the scan is `failed` (the maintenance job scans it again later)."""
    try:
        pipeline.scan(file_id, task_id=self.request.id, report=celery_progress(self))
    except (ScanUnavailable, SoftTimeLimitExceeded) as exc:
        final = self.request.retries >= self.max_retries
        pipeline.scan_unavailable(file_id, str(exc) or "scan timed out", final, self.request.id)
        if not final:
            raise self.retry(exc=exc, countdown=scan_retry_countdown(self.request.retries)) from exc
        return
    if not self.request.chain:
        # Run on its own (the maintenance job retrying a failed scan, or
        # rescanning under new signatures): what follows a scan still has
        # to happen. It skips whatever is already done.
        thumbnail.delay(file_id)


def scan_retry_countdown(retries: int) -> float:
    """Full jitter: spread retries of many files over the whole window."""
    ceiling = min(limits.RETRY_BACKOFF_MAX, get_settings().clamd_retry_backoff * 2**retries)
    return random.uniform(0, ceiling)


@shared_task(bind=True, base=VezaTask, name=jobs.THUMBNAIL_FILE.name, **FILE_LIMITS)
def thumbnail(self: VezaTask, file_id: int) -> None:
    """The last link: thumbnail (images only), then mark the file completed.
    An image that takes too long to decode is recorded as failed, not retried."""
    try:
        pipeline.thumbnail(file_id, task_id=self.request.id, report=celery_progress(self))
    except SoftTimeLimitExceeded:
        pipeline.fail(file_id, "thumbnail", "took longer than the time limit", self.request.id)
    pipeline.finish(file_id, task_id=self.request.id)


@worker_ready.connect
def remove_scratch_debris(**_: object) -> None:
    """A step killed on this machine leaves its copy in scratch space, and
    the maintenance sweep only clears the machine it runs on: each worker
    clears its own machine's at start. Only what is older than the grace:
    another worker sharing this STORAGE_DIR may be in the middle of a step."""
    older_than = time.time() - get_settings().orphan_grace_seconds
    try:
        removed = get_storage().remove_debris(older_than, dry_run=False)
    except TRANSFER_ERRORS as exc:  # the store down at start: the next start, or the sweep
        log.warning("scratch debris not cleared at start: %s", exc)
        return
    if removed:
        log.info("removed %d pieces of scratch debris older than the grace", removed)


@worker_process_init.connect
def make_the_store(**_: object) -> None:
    """A pool child makes its store as it starts (for a bucket, a boto3
    client: about 0.1 s of loading its service model), not in its first task."""
    get_storage()
