"""The file pipeline's steps as plain functions: hash, sniff, scan,
thumbnail, finish. The Celery tasks in tasks/files.py are thin wrappers;
tests and benchmarks call these directly.

Every step is idempotent: it reads the row, skips if its result is already
there, does its slow work outside any transaction, then writes its result
under a row lock, checking again. A permanent failure (bad input: size
mismatch, corrupt image, infected or unscannable content) is recorded once, as
processing_status = failed with metadata.failure_reason and failed_step,
and every later step skips such a row. A scan that could not get a verdict
is not permanent: virus_scan_status = failed, and running the scan again
(the maintenance job, or files.process) picks it up. Nor is a full disk:
the step that met it records metadata.last_storage_error and raises
StorageFull, which the task retries like any unavailable dependency.

Content shared by several rows (identical uploads) is guarded by a
PostgreSQL advisory lock on its hash, taken by whoever creates, quarantines
or deletes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import magic
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from db.engine import affected, session_scope
from db.models import AuditSeverity, File, FileProcessingStatus, VirusScanStatus
from veza import audit, images
from veza.clamav import Scanner, StreamedScan, Unscannable, Verdict
from veza.files import blocklist, inspection
from veza.media import renditions
from veza.progress import ProgressReport, Throttled, nowhere
from veza.settings import get_settings
from veza.storage import ContentMissing, StorageFull, get_storage

log = logging.getLogger(__name__)

VERDICTS = (VirusScanStatus.clean, VirusScanStatus.infected)
# What a client sees while clamd cannot be reached: the error itself (a
# socket path, a host) stays in the logs.
SCANNER_UNAVAILABLE = "the virus scanner is unavailable"
# The prefix of an unscannable file's failure_reason (api/files.py reads it).
UNSCANNABLE = "unscannable"
# A step on an upload this big reports its progress (Flower shows it); a
# smaller one ends within a second or so, and reporting would only cost.
LARGE_FILE_BYTES = 16 * 1024 * 1024
HASH_CHUNK_BYTES = 1024 * 1024

# progress(phase, bytes_done=None, force=False): see _progress.
StepProgress = Callable[..., None]


class _StepLog(logging.LoggerAdapter[logging.Logger]):
    def process(
        self, msg: object, kwargs: MutableMapping[str, Any]
    ) -> tuple[str, MutableMapping[str, Any]]:
        assert self.extra is not None  # always given, by _log below
        return f"file {self.extra['file_uuid']} task {self.extra['task_id']}: {msg}", kwargs


def _log(file: File, task_id: str | None) -> _StepLog:
    return _StepLog(log, {"file_uuid": file.uuid, "task_id": task_id or "-"})


def _progress(file: File, report: ProgressReport) -> StepProgress:
    """Where a step on a large upload is: its phase, its size and, when the
    step reads the bytes itself (hashing), how many it has read; the start
    of a phase always goes out, bytes at most once a second."""
    if file.file_size < LARGE_FILE_BYTES or report is nowhere:
        return lambda phase, bytes_done=None, force=False: None
    throttled = Throttled(report)

    def progress(phase: str, bytes_done: int | None = None, force: bool = False) -> None:
        meta: dict[str, Any] = {"file_id": file.id, "phase": phase, "bytes_total": file.file_size}
        if bytes_done is not None:
            meta["bytes_done"] = bytes_done
        throttled(meta, force)

    return progress


def _failed_for_good(file: File) -> bool:
    return "failure_reason" in file.meta


def _load(file_id: int) -> File | None:
    with session_scope() as session:
        file = session.get(File, file_id)
    if file is None:
        log.warning("file %s: no such row (deleted?); nothing to do", file_id)
    return file


@contextmanager
def _locked(file_id: int) -> Iterator[File | None]:
    """The row, locked until the block ends and its changes commit."""
    with session_scope() as session:
        yield session.get(File, file_id, with_for_update=True)


def lock_content(session: Session, sha256: str) -> None:
    """Serialise everyone who creates, quarantines or deletes this content,
    until the transaction ends."""
    session.execute(select(func.pg_advisory_xact_lock(int(sha256[:15], 16))))


@contextmanager
def _storage_full_recorded(file_id: int, step: str, task_id: str | None) -> Iterator[None]:
    """A full disk is no fault of the file: say so on the row (what step,
    when: a record for operators, left in place once the step succeeds)
    and let StorageFull through for the task to retry later. The step's
    own transaction has rolled back by then: nothing was recorded as done."""
    try:
        yield
    except StorageFull as exc:
        with _locked(file_id) as row:
            if row is not None:
                error = {"step": step, "error": str(exc), "at": datetime.now(UTC).isoformat()}
                row.meta = {**row.meta, "last_storage_error": error}
                _log(row, task_id).warning("%s: %s; retried later", step, exc)
        raise


def _start_processing(file: File | None) -> None:
    """pending (or a failure that was not final: a failed scan, a stuck
    file, being retried) -> processing, stamped: the maintenance job counts
    a file as stuck from this stamp. A retried failure's record goes."""
    if file is None or _failed_for_good(file):
        return  # deleted, or a concurrent run recorded a final failure
    if file.processing_status in (FileProcessingStatus.pending, FileProcessingStatus.failed):
        file.processing_status = FileProcessingStatus.processing
        kept = {k: v for k, v in file.meta.items() if k not in ("failed_step", "error")}
        file.meta = {**kept, "processing_started_at": datetime.now(UTC).isoformat()}


def fail(file_id: int, step: str, reason: str, task_id: str | None = None) -> None:
    """Record a permanent failure: the input is bad, retrying cannot help."""
    with _locked(file_id) as file:
        if file is not None:
            record_failure(file, step, reason, task_id)


def record_failure(file: File, step: str, reason: str, task_id: str | None = None) -> None:
    """fail() on a row the caller has locked, in the caller's transaction
    (the maintenance jobs mark rows of a batch they hold). The one way a
    failure is recorded: failed_step and failure_reason, and a scan left
    `scanning` is `failed` (it will get no verdict this way)."""
    if _failed_for_good(file):
        return
    file.processing_status = FileProcessingStatus.failed
    file.is_processed = True
    if file.virus_scan_status is VirusScanStatus.scanning:
        file.virus_scan_status = VirusScanStatus.failed
    file.meta = {**file.meta, "failed_step": step, "failure_reason": reason}
    _log(file, task_id).warning("%s failed: %s", step, reason)


def hash_upload(file_id: int, task_id: str | None = None, report: ProgressReport = nowhere) -> None:
    """SHA-256 of the upload, size check, then the content moves into the
    blob store under its hash (one blob per distinct content)."""
    file = _load(file_id)
    if file is None or _failed_for_good(file):
        return
    step_log = _log(file, task_id)
    storage = get_storage()
    upload = storage.upload_path(file.uuid)
    if file.file_hash is not None:
        storage.remove(upload)  # left behind if we died right after committing
        if storage.content_path(file.file_hash) is None:
            # Lost since (a requeued file): the later steps would skip, and
            # finish would complete a file with nothing to serve.
            return fail(file_id, "hash", "the content is missing from storage", task_id)
        with _locked(file_id) as row:
            _start_processing(row)  # a requeued file goes through again
        step_log.info("hash: already %s, skipped", file.file_hash)
        return
    with _locked(file_id) as row:
        _start_processing(row)

    with ExitStack() as opened:
        try:
            # Only the copy's or the opening's FileNotFoundError (ContentMissing
            # is one) means the upload is missing; once open, a concurrent
            # run's unlink cannot take it away.
            copy = opened.enter_context(storage.local_copy(file.file_path))
            content = opened.enter_context(open(copy, "rb"))
        except FileNotFoundError:
            current = _load(file_id)
            if current is None or current.file_hash is not None:
                return  # deleted meanwhile, or a concurrent run of this step moved it first
            return fail(file_id, "hash", "the uploaded content is missing", task_id)
        size_stored = os.fstat(content.fileno()).st_size
        if size_stored != file.file_size:
            return fail(
                file_id,
                "hash",
                f"size mismatch: the upload said {file.file_size} bytes, {size_stored} arrived",
                task_id,
            )
        sha256 = _sha256(content, _progress(file, report))

    with _storage_full_recorded(file_id, "hash", task_id), session_scope() as session:
        lock_content(session, sha256)
        row = session.get(File, file_id, with_for_update=True)
        if row is None:
            return  # deleted while we hashed: nothing to store it for
        known = kept_content_path(session, sha256, file_id)
        row.file_path = storage.promote_upload(file.file_path, sha256, known)
        row.file_hash = sha256
    storage.remove(file.file_path)
    step_log.info("hash: %s, %d bytes, stored at %s", sha256, size_stored, row.file_path)


def _sha256(content: IO[bytes], progress: StepProgress) -> str:
    """hashlib.file_digest's loop, with the bytes read so far reported (by
    read(), which every store's stream has; S3's has no readinto)."""
    digest = hashlib.sha256()
    done = 0
    progress("hash", 0, force=True)
    while chunk := content.read(HASH_CHUNK_BYTES):
        digest.update(chunk)
        done += len(chunk)
        progress("hash", done)
    return digest.hexdigest()


def sniff(file_id: int, task_id: str | None = None) -> None:
    """The content's real MIME type, by libmagic; the client's claim stays
    in metadata, with a flag when the two disagree."""
    file = _load(file_id)
    if file is None or _failed_for_good(file) or file.file_hash is None:
        return
    if "mime_mismatch" in file.meta:  # set by a previous sniff of this row
        return
    try:
        with get_storage().content_copy(file.file_hash) as path:
            sniffed = magic.from_file(str(path), mime=True)
    except ContentMissing:
        return fail(file_id, "sniff", "the content is missing from storage", task_id)
    claimed = file.meta.get("claimed_mime_type")
    mismatch = claimed is not None and claimed.split(";")[0].strip().lower() != sniffed
    with _locked(file_id) as row:
        if row is None:
            return
        row.mime_type = sniffed[:100]
        row.meta = {**row.meta, "mime_mismatch": mismatch}
    _log(file, task_id).info("sniff: %s (claimed %s)", sniffed, claimed)


def scan(
    file_id: int,
    scanner: Scanner | None = None,
    task_id: str | None = None,
    report: ProgressReport = nowhere,
) -> None:
    """Ask clamd for a verdict (or reuse one for the same content under the
    same signature version). Raises ScanUnavailable when there is none: the
    caller retries, then calls scan_unavailable(final=True).

    Infected is final, and so is unscannable (clamd's heuristics for what
    it could not inspect, or our own inspection after its OK:
    inspected_verdict). Clean holds for the signature version it was reached
    under (clamd's whole VERSION line, Scanner.version): a clean file is
    scanned again once clamd's version differs from its own (the
    maintenance job's rescan), and stays clean, and downloadable, until a
    new verdict says otherwise."""
    file = _load(file_id)
    if file is None or _failed_for_good(file) or file.file_hash is None:
        return
    step_log = _log(file, task_id)
    if file.virus_scan_status is VirusScanStatus.infected:
        step_log.info("scan: already infected, skipped")
        return
    scanner = scanner or Scanner()
    if file.virus_scan_status is not VirusScanStatus.clean:
        with _locked(file_id) as row:
            if row is None or row.virus_scan_status in VERDICTS or _failed_for_good(row):
                return  # deleted, or a concurrent run got a verdict since we looked
            _start_processing(row)
            row.virus_scan_status = VirusScanStatus.scanning
    # Raises ScanUnavailable for a rescan of a clean file too: the rescan is
    # retried like any scan (the file stays clean meanwhile), never dropped.
    version = scanner.version()
    if file.virus_scan_status is VirusScanStatus.clean and version == file.meta.get(
        "clamd_version"
    ):
        step_log.info("scan: already clean under %s, skipped", version)
        return

    verdict = _earlier_verdict(file.file_hash, version)
    if verdict is None:
        # clamd reads the file itself (or we stream it): no bytes to count.
        _progress(file, report)("scan", force=True)
        try:
            verdict = _scanned(scanner, file.file_hash)
        except ContentMissing:
            return fail(file_id, "scan", "the content is missing from storage", task_id)
        except Unscannable as exc:
            return _record_unscannable(file_id, exc, version, task_id)
    else:
        step_log.info("scan: reusing the verdict for %s under %s", file.file_hash, version)
    with _storage_full_recorded(file_id, "scan", task_id):  # quarantining writes
        _record_verdict(file_id, file.file_hash, verdict, version, task_id)


def _scanned(scanner: Scanner, sha256: str) -> Verdict:
    """The content's inspected verdict. Content that is not on this machine
    (a bucket's, not in the scratch cache) is streamed to clamd as it is
    fetched (INSTREAM), while the copy our own inspection reads is written:
    one fetch, and clamd done when the last byte arrives."""
    streamed = scanner.stream()
    try:
        with get_storage().content_copy(sha256, on_chunk=streamed.send) as path:
            return inspected_verdict(scanner, path, streamed)
    finally:
        streamed.close()


def inspected_verdict(
    scanner: Scanner, path: Path, streamed: StreamedScan | None = None
) -> Verdict:
    """clamd's verdict (the streamed session's, when the bytes went to it as
    they were fetched), and then, for content clamd said OK to, our own look
    inside the containers it may not have read (veza/files/inspection.py).
    Raises Unscannable for what either could not inspect; when clamd said
    so, our inspection's reason is kept if it has one (it names the member),
    and clamd's signature goes to the audit entry either way."""
    try:
        verdict = streamed.verdict() if streamed and streamed.started else scanner.scan(path)
    except Unscannable as exc:
        raise Unscannable(inspection.unscannable_reason(path) or exc.reason, exc.signature) from exc
    if not verdict.infected and (reason := inspection.unscannable_reason(path)):
        raise Unscannable(reason)
    return verdict


def is_unscannable(file: File) -> bool:
    """Failed for good because it could not be inspected (not requeued since)."""
    reason = file.meta.get("failure_reason")
    return (
        file.virus_scan_status is VirusScanStatus.failed
        and isinstance(reason, str)
        and reason.startswith(f"{UNSCANNABLE}: ")
    )


def _record_unscannable(file_id: int, exc: Unscannable, version: str, task_id: str | None) -> None:
    """Content that cannot be inspected is neither clean nor infected: the
    scan is failed, for good (a signature update cannot open an encrypted
    archive, so rescans skip it: it has a failure_reason), the file is not
    served, and the uploader's attempt is audited. Other rows with the same
    content get the same answer from their own scan."""
    reason = f"{UNSCANNABLE}: {exc.reason}"  # what is_unscannable() recognises
    with session_scope() as session:
        file = session.get(File, file_id, with_for_update=True)
        if file is None or file.virus_scan_status is VirusScanStatus.infected:
            return
        if _failed_for_good(file):
            return  # a concurrent run recorded it
        file.virus_scan_status = VirusScanStatus.failed
        file.virus_scan_result = reason[:1000]
        file.processing_status = FileProcessingStatus.failed
        file.is_processed = True
        file.meta = {
            **file.meta,
            "clamd_version": version,
            "failed_step": "scan",
            "failure_reason": reason,
        }
        _audit_verdict(
            session,
            file,
            "file.unscannable",
            {"reason": exc.reason, "signature": exc.signature, "clamd_version": version},
            AuditSeverity.warning,
        )
        _log(file, task_id).warning("scan: %s", reason)


def _earlier_verdict(sha256: str, version: str) -> Verdict | None:
    """A verdict another row got for the same content from the same
    signature database; a new database means scanning again."""
    with session_scope() as session:
        earlier = session.execute(
            select(File.virus_scan_status, File.virus_scan_result)
            .where(
                File.file_hash == sha256,
                File.virus_scan_status.in_(VERDICTS),
                File.meta["clamd_version"].astext == version,
            )
            .limit(1)
        ).first()
    if earlier is None:
        return None
    status, signature = earlier
    return Verdict(infected=status is VirusScanStatus.infected, signature=signature)


def _record_verdict(
    file_id: int, sha256: str, verdict: Verdict, version: str, task_id: str | None
) -> None:
    with session_scope() as session:
        # Content lock before row locks, the order hash_upload takes them in.
        lock_content(session, sha256)
        file = session.get(File, file_id, with_for_update=True)
        if (
            file is None
            or file.virus_scan_status is VirusScanStatus.infected
            or (
                file.virus_scan_status is VirusScanStatus.clean
                and file.meta.get("clamd_version") == version
            )
        ):
            return  # a concurrent run recorded this verdict already
        if verdict.infected:
            _quarantine(session, sha256, verdict.signature, version, task_id)
            return
        file.virus_scan_status = VirusScanStatus.clean
        file.virus_scan_result = None
        file.meta = {**file.meta, "clamd_version": version}
        _log(file, task_id).info("scan: clean (%s)", version)


def _quarantine(
    session: Session, sha256: str, signature: str | None, version: str, task_id: str | None
) -> None:
    """Infected content is infected for every row that holds it: all of them
    get the verdict, the content leaves the served tree, any thumbnail made
    under an older signature database goes, and each newly infected row gets
    a critical audit entry. The rows themselves are kept. Archived rows
    (attachments of archived messages) with the content get the verdict too:
    a restore must not bring back a clean row whose bytes are quarantined."""
    storage = get_storage()
    quarantined = storage.quarantine(sha256)
    for rendition in storage.rendition_paths(sha256):
        storage.remove(rendition)
    failure = {
        "clamd_version": version,
        "failed_step": "scan",
        "failure_reason": f"infected: {signature}",
    }
    archived = affected(
        session.execute(
            text(
                "UPDATE archived_files SET file_path = :path, thumbnail_path = NULL,"
                " virus_scan_status = 'infected', virus_scan_result = :signature,"
                " processing_status = 'failed', is_processed = true,"
                " metadata = metadata || CAST(:failure AS jsonb)"
                " WHERE file_hash = :sha256 AND virus_scan_status <> 'infected'"
            ),
            {
                "path": quarantined,
                "signature": signature,
                "failure": json.dumps(failure),
                "sha256": sha256,
            },
        )
    )
    if archived:
        log.critical(
            "scan: %s INFECTED with %s: %d archived rows marked", sha256, signature, archived
        )
    rows = session.scalars(select(File).where(File.file_hash == sha256).with_for_update()).all()
    for row in rows:
        row.file_path = quarantined
        row.thumbnail_path = None
        if row.virus_scan_status is VirusScanStatus.infected:
            continue
        row.virus_scan_status = VirusScanStatus.infected
        row.virus_scan_result = signature
        row.processing_status = FileProcessingStatus.failed
        row.is_processed = True
        row.meta = {**row.meta, **failure}
        _audit_verdict(
            session,
            row,
            "file.infected",
            {"signature": signature, "clamd_version": version},
            AuditSeverity.critical,
        )
        _log(row, task_id).critical("scan: INFECTED with %s, quarantined", signature)


def _audit_verdict(
    session: Session,
    file: File,
    action: str,
    details: dict[str, Any],
    severity: AuditSeverity,
) -> None:
    """The audit row of a scan's verdict on one file: who uploaded what
    where, and what the scanner said."""
    audit.record(
        session,
        action,
        {
            "file_uuid": str(file.uuid),
            "file_hash": file.file_hash,
            "original_filename": file.original_filename,
            # A DM's file: the audit row has a room column only.
            **({"conversation_id": file.conversation_id} if file.conversation_id else {}),
            **details,
        },
        user_id=file.uploaded_by,
        room_id=file.room_id,
        resource_type="file",
        resource_id=file.id,
        severity=severity,
    )


def scan_unavailable(file_id: int, error: str, final: bool, task_id: str | None = None) -> None:
    """Record a scan attempt that got no verdict. Until the last attempt the
    status stays `scanning` with the error visible; after it, `failed`.
    Never `clean`. A rescan of a clean file leaves it clean: clamd being down
    is no reason to withdraw a verdict, and the row still holds its older
    clamd_version, so the maintenance job's next rescan asks again."""
    with _locked(file_id) as file:
        if file is None or file.virus_scan_status is VirusScanStatus.infected:
            return
        if file.virus_scan_status is VirusScanStatus.clean:
            _log(file, task_id).warning(
                "rescan: %s; stays clean under %s%s",
                error,
                file.meta.get("clamd_version"),
                " (giving up until the next rescan)" if final else "",
            )
            return
        file.virus_scan_result = f"{SCANNER_UNAVAILABLE}{'' if final else '; retrying'}"
        if final:
            file.virus_scan_status = VirusScanStatus.failed
            file.processing_status = FileProcessingStatus.failed
        _log(file, task_id).warning("scan: %s%s", error, " (giving up)" if final else "")


def thumbnail(file_id: int, task_id: str | None = None, report: ProgressReport = nowhere) -> None:
    """The renditions of a clean image, video or PDF (veza/media/
    renditions.py), one set per distinct content, and the image (or the
    poster) checked against the moderation blocklist (a match holds the
    file and its message: veza/files/blocklist.py). The step and its task
    keep their first name. Other files, files not (yet) clean, and files
    whose renditions were made under the sizes configured now, are left
    alone."""
    file = _load(file_id)
    if (
        file is None
        or _failed_for_good(file)
        or file.virus_scan_status is not VirusScanStatus.clean
        or file.file_hash is None  # never, once clean: for the type checker
        or has_current_renditions(file)
    ):
        return
    if file.mime_type not in renditions.RENDERED_TYPES:
        if file.mime_type.startswith("image/"):  # we say we make no preview
            fail(file_id, "thumbnail", f"unsupported image format {file.mime_type}", task_id)
        return
    storage = get_storage()
    sizes = get_settings().rendition_sizes
    _progress(file, report)("renditions", force=True)
    try:
        # Always decoded, even when an identical upload already made the
        # renditions: the metadata is this row's, and the bytes are the same.
        with storage.local_copy(file.file_path) as source:
            rendered = renditions.render(source, file.mime_type, sizes)
    except images.UnsupportedImage as exc:
        return fail(file_id, "thumbnail", str(exc), task_id)
    except ContentMissing:
        return fail(file_id, "thumbnail", "the content is missing from storage", task_id)
    with _storage_full_recorded(file_id, "thumbnail", task_id):
        made = _write_renditions(file.file_hash, rendered)
    with session_scope() as session:
        found = blocklist.match(session, rendered.pdq)
        if found and file.message_id is not None:
            blocklist.lock_message(session, file.message_id)
        row = session.get(File, file_id, with_for_update=True)
        if row is None or row.virus_scan_status is not VirusScanStatus.clean:
            return  # deleted, or found infected (under new signatures) meanwhile
        row.thumbnail_path = str(made[0]["key"])  # the smallest still: the thumbnail
        row.meta = {
            **row.meta,
            **rendered.source,
            **rendered.notes,
            "renditions": made,
            "rendition_sizes": list(sizes),
            "placeholder": rendered.placeholder,
        }
        if found:
            blocklist.hold(session, row, found)
    _log(file, task_id).info(  # the step's name leads, as in every pipeline line
        "thumbnail: renditions %s%s",
        ", ".join(f"{r['width']}x{r['height']}" for r in made),
        f"; held: blocklist entry {found.entry_id} at {found.distance} bits" if found else "",
    )


def has_current_renditions(file: File) -> bool:
    """Made under the sizes configured now (the backfill's test too)."""
    return file.meta.get("rendition_sizes") == list(get_settings().rendition_sizes)


def _write_renditions(sha256: str, rendered: renditions.Rendered) -> list[dict[str, object]]:
    """Store each rendition under its content's name (idempotent: the same
    content gives the same bytes); their metadata, smallest still first."""
    storage = get_storage()
    made = []
    for rendition in rendered.renditions:
        key = storage.rendition_path(sha256, rendition.size, rendition.animated)
        with storage.atomic_writer(key) as out:
            out.write(rendition.data)
        made.append(rendition.as_metadata(key))
    return made


def finish(file_id: int, task_id: str | None = None) -> None:
    """The end of the pipeline: a clean file whose steps all ran is
    completed. Failures were recorded by the step that met them. Only a row
    in `processing` is promoted: one still `pending` has not been through
    the steps (a requeued file), one `failed` failed."""
    with _locked(file_id) as file:
        if (
            file is None
            or _failed_for_good(file)
            or file.virus_scan_status is not VirusScanStatus.clean
            or file.processing_status is not FileProcessingStatus.processing
        ):
            return
        file.processing_status = FileProcessingStatus.completed
        file.is_processed = True
        _log(file, task_id).info("completed")


def run_all(file_id: int, scanner: Scanner | None = None) -> None:
    """Every step in one process, in order: the benchmark's bare loop."""
    hash_upload(file_id)
    sniff(file_id)
    scan(file_id, scanner)
    thumbnail(file_id)
    finish(file_id)


def kept_content_path(session: Session, sha256: str, file_id: int) -> str | None:
    """Where another row, live or archived, says this content is kept (its
    blob, or its quarantined copy), or None when no row holds it."""
    path: str | None = session.scalar(
        text(
            "(SELECT file_path FROM files WHERE file_hash = :h AND id <> :id LIMIT 1)"
            " UNION ALL (SELECT file_path FROM archived_files WHERE file_hash = :h LIMIT 1)"
            " LIMIT 1"
        ),
        {"h": sha256, "id": file_id},
    )
    return path


def content_referenced(session: Session, sha256: str) -> bool:
    """A file row, live or archived (restorable), still holds this content."""
    return bool(
        session.scalar(
            text(
                "SELECT EXISTS (SELECT 1 FROM files WHERE file_hash = :h)"
                " OR EXISTS (SELECT 1 FROM archived_files WHERE file_hash = :h)"
            ),
            {"h": sha256},
        )
    )


def delete_content_if_unreferenced(sha256: str) -> bool:
    """Remove a hash's blob, quarantined copy and thumbnail, but only when no
    row references the hash any more. Checked under the content lock that
    hashing takes before it points a row at the blob, so a new upload of the
    same bytes cannot lose its content to a concurrent delete.
    Returns whether it removed them."""
    with session_scope() as session:
        lock_content(session, sha256)
        if content_referenced(session, sha256):
            return False
        get_storage().remove_content(sha256)
        return True
