"""Uploads and downloads.

An upload is streamed to storage under a server-made name (the file's
uuid), counted as it goes; the row and its `files.process` outbox row
commit together, and the answer is 202: hashing, sniffing, thumbnailing and
the virus scan happen in workers. Nothing is served before a clean scan.
A full disk answers 507 and leaves nothing: no bytes, no row, no outbox row.

Bytes go out from the store (veza/storage/): a local file is sent as it is;
an object in S3 is streamed through, or, with S3_SERVE=redirect, the answer
is a 302 to a presigned URL valid S3_PRESIGN_SECONDS. Either way the row's
verdict is checked first, at request time, and a content found infected
later has left blobs/ for quarantine/, so an URL handed out before it no
longer reaches the bytes.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, Response, current_app, g, request, send_file
from sqlalchemy import ColumnElement, event, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage
from werkzeug.http import dump_options_header
from werkzeug.utils import secure_filename

from api.access import (
    check_conversation_open,
    forbidden,
    member_of,
    not_found,
    participant_conversation,
    visible_message,
    visible_room,
)
from api.errors import ApiError
from api.messages import check_not_silenced
from api.quotas import check_upload_quota, lock_user_quota
from api.request_context import request_id
from api.schemas import FileOut, ThumbnailQuery
from api.spec import operation
from db.models import File, Message, VirusScanStatus
from veza import jobs
from veza.files.owed import owe
from veza.files.pipeline import is_unscannable
from veza.settings import get_settings
from veza.storage import (
    ContentMissing,
    EmptyUpload,
    LocalStorage,
    S3Storage,
    StorageFull,
    StorageUnavailable,
    UploadTooLarge,
    get_storage,
)

log = logging.getLogger(__name__)
bp = Blueprint("files", __name__)

THUMBNAIL_MIME_TYPE = "image/webp"
# Sniffed types a browser only displays or plays, never runs: served with
# their own type. Everything else (HTML, SVG, XML, JavaScript, PDF with its
# scripts and actions, office documents, unknown types) is served as
# application/octet-stream. Every file response carries
# `Content-Security-Policy: sandbox` and `Content-Disposition: attachment`.
INERT_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/x-ms-bmp",
        "text/plain",
        "application/zip",
        "application/x-7z-compressed",
        "application/gzip",
        "application/x-tar",
        "application/x-bzip2",
        "application/x-xz",
    }
)
INERT_PREFIXES = ("audio/", "video/")
ACTIVE_FALLBACK = "application/octet-stream"
# The metadata a client may see: what it sent, what the content is, why it
# failed. The rest (clamd's version, storage errors, outbox ids, worker
# bookkeeping) is internal and stays in the row and the logs.
CLIENT_METADATA = (
    "claimed_mime_type",
    "mime_mismatch",
    "image",
    "placeholder",
    "failed_step",
    "failure_reason",
    "held",
)
UPLOAD_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "message_id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    },
}


def original_filename(upload: FileStorage) -> str:
    """The client's name, reduced to a safe display name (no directories,
    no control characters). It is stored as original_filename and used in
    Content-Disposition, never in a path."""
    return (secure_filename(upload.filename or "") or "upload")[:255]


def attached_message(
    session: Session, place: ColumnElement[bool], raw_id: str | None
) -> Message | None:
    """The caller's live message `message_id` names, in the room or DM the
    upload goes to (`place`, a condition on Message); None without one."""
    if raw_id is None:
        return None
    # isdigit() alone accepts digits such as '²' that int() refuses.
    if not (raw_id.isascii() and raw_id.isdigit()) or not 1 <= int(raw_id) <= 2**31 - 1:
        raise ApiError(
            422,
            "validation_failed",
            "The form is not valid.",
            {"message_id": "must be a message id"},
        )
    message = session.scalar(
        select(Message).where(Message.id == int(raw_id), place, Message.is_deleted.is_(False))
    )
    if message is None:
        raise not_found()
    if message.author_id != g.user.id:
        raise forbidden("Files can only be attached to your own messages.")
    return message


def save_to_storage(upload: FileStorage, file_uuid: uuid.UUID) -> tuple[str, int]:
    upload.stream.seek(0)  # a retried transaction reads the upload again
    limit = current_app.config.get("MAX_UPLOAD_BYTES", get_settings().max_upload_bytes)
    try:
        return get_storage().save_upload(upload.stream, file_uuid, limit)
    except UploadTooLarge as err:
        raise ApiError(
            413,
            "file_too_large",
            f"Files are limited to {limit} bytes.",
            {"file": f"larger than {limit} bytes"},
        ) from err
    except EmptyUpload as err:
        raise ApiError(400, "empty_file", "The file is empty.", {"file": "0 bytes"}) from err
    except StorageFull as err:
        # The client can only try again later; the operator must free space.
        log.error("upload refused: %s (%s)", err, get_storage().describe())
        raise ApiError(
            507,
            "insufficient_storage",
            "The server has no room to store the file now; try again later.",
        ) from err
    except StorageUnavailable as err:
        log.error("upload refused: %s (%s)", err, get_storage().describe())
        raise storage_unavailable() from err


def storage_unavailable() -> ApiError:
    """The store is out of reach: nothing was stored, nothing is lost; the
    client tries again later (its details stay in the log)."""
    return ApiError(
        503, "storage_unavailable", "The file store is unavailable now; try again later."
    )


def forget_upload(relative: str) -> None:
    """The upload's transaction rolled back: its bytes must not stay. With
    the store out of reach they stay, and the orphan sweep removes them
    (no row names them) once past the grace."""
    try:
        get_storage().remove(relative)
    except StorageUnavailable as err:
        log.warning("upload %s left for the orphan sweep: %s", relative, err)


@operation(
    bp,
    "POST",
    "/rooms/<id:room_id>/files",
    summary="Upload a file (processed later)",
    multipart=UPLOAD_FORM,
    responses={202: FileOut},
    errors=(403, 409, 413, 429, 503, 507),
)
def upload_file(session: Session, room_id: int) -> tuple[FileOut, int]:
    room, member = member_of(session, room_id, g.user)
    check_not_silenced(room, member)
    return store_upload(session, Message.room_id == room.id, room_id=room.id), 202


@operation(
    bp,
    "POST",
    "/conversations/<id:conversation_id>/files",
    summary="Upload a file to a DM (processed later)",
    multipart=UPLOAD_FORM,
    responses={202: FileOut},
    errors=(403, 413, 429, 503, 507),
)
def upload_direct_file(session: Session, conversation_id: int) -> tuple[FileOut, int]:
    conversation = participant_conversation(session, conversation_id, g.user)
    check_conversation_open(conversation)
    place = Message.conversation_id == conversation.id
    return store_upload(session, place, conversation_id=conversation.id), 202


def store_upload(
    session: Session,
    place: ColumnElement[bool],
    *,
    room_id: int | None = None,
    conversation_id: int | None = None,
) -> FileOut:
    """The one upload path, for a room or a DM once the caller may write
    there: the form checked, the bytes stored, then the row and its
    `files.process` outbox row, within the quotas. `place` is where an
    attached message must be (a condition on Message)."""
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(
            400, "missing_file", "Send the file as multipart field 'file'.", {"file": "required"}
        )
    message = attached_message(session, place, request.form.get("message_id"))
    check_upload_quota(session, g.user.id, 0)  # already used up: refused before storing
    file_uuid = uuid.uuid4()
    relative, size = save_to_storage(upload, file_uuid)
    # If this transaction does not commit, the bytes must not stay behind.
    event.listen(session, "after_rollback", lambda _s: forget_upload(relative), once=True)
    lock_user_quota(session, g.user.id)  # until commit: concurrent uploads count each other
    check_upload_quota(session, g.user.id, size)
    row = File(
        uuid=file_uuid,
        filename=str(file_uuid),
        original_filename=original_filename(upload),
        file_path=relative,
        file_size=size,
        uploaded_by=g.user.id,
        room_id=room_id,
        conversation_id=conversation_id,
        message_id=message.id if message else None,
        message_created_at=message.created_at if message else None,
        meta={"claimed_mime_type": upload.mimetype or None},
    )
    session.add(row)
    session.flush()
    owe(session, jobs.PROCESS_FILE, row.id, request_id=request_id())
    session.refresh(row)  # the statuses and times the database filled in
    return file_out(row)


def file_out(row: File) -> FileOut:
    fields = {
        name: getattr(row, name)
        for name in FileOut.model_fields
        if name not in ("processing_status", "virus_scan_status", "has_thumbnail", "metadata")
    }
    return FileOut(
        **fields,
        processing_status=row.processing_status.value,
        virus_scan_status=row.virus_scan_status.value,
        has_thumbnail=row.thumbnail_path is not None,
        metadata={key: row.meta[key] for key in CLIENT_METADATA if key in row.meta}
        | {"renditions": [_public(r) for r in row.meta.get("renditions", [])]},
    )


def _public(rendition: dict[str, Any]) -> dict[str, Any]:
    """A rendition as clients see it: what it is, not where it is stored."""
    return {key: value for key, value in rendition.items() if key != "key"}


def rendition_path(row: File, size: int | None, still: bool) -> str | None:
    """Where the rendition to serve is: of an animated source, an animated
    one unless `still`; the smallest, or the one nearest `size` (a tie goes
    to the larger: it scales down well). A file from before renditions has
    its one thumbnail until the backfill (docs/files.md)."""
    made: list[dict[str, Any]] = row.meta.get("renditions") or []
    if not made:
        return row.thumbnail_path
    animated = [r for r in made if r["animated"]]
    choices = animated if animated and not still else [r for r in made if not r["animated"]]
    if size is None:
        return str(choices[0]["key"])
    nearest = min(choices, key=lambda r: (abs(r["size"] - size), -r["size"]))
    return str(nearest["key"])


def visible_file(session: Session, file_uuid: uuid.UUID, *, lock: bool = False) -> File:
    query = select(File).where(File.uuid == file_uuid)
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise not_found()
    if row.message_id is not None:
        # An attachment lives and dies with its message, for everyone:
        # a message deleted by a moderator, past retention or in a room the
        # caller may not see hides its files too (404).
        visible_message(session, row.message_id, g.user)
    elif row.uploaded_by != g.user.id:
        # An upload attached to nothing: for whoever may read where it was
        # uploaded (404 otherwise).
        if row.conversation_id is not None:
            participant_conversation(session, row.conversation_id, g.user)
        elif row.room_id is not None:
            visible_room(session, row.room_id, g.user)
        else:
            raise not_found()
    return row


def released_file(session: Session, file_uuid: uuid.UUID) -> File:
    """A file whose bytes may go out: only after a clean scan (or, when the
    operator allows it, an unscannable file to its own uploader)."""
    row = visible_file(session, file_uuid, lock=True)
    status = row.virus_scan_status
    if is_unscannable(row) and uploader_may_have_it_back(row):
        return row
    if status is VirusScanStatus.infected:
        raise ApiError(
            403,
            "file_infected",
            "The file failed its virus scan.",
            {"virus_scan_status": status.value},
        )
    if status is not VirusScanStatus.clean:
        raise ApiError(
            409,
            "file_not_scanned",
            f"The file is not available yet: its virus scan is {status.value}.",
            {"virus_scan_status": status.value, "reason": row.virus_scan_result},
        )
    if "held" in row.meta:
        # To nobody, its uploader included, until a moderator approves its
        # message (veza/files/blocklist.py).
        raise ApiError(
            403, "file_held", "The file is held for moderation.", {"held": row.meta["held"]}
        )
    return row


def uploader_may_have_it_back(row: File) -> bool:
    return get_settings().serve_unscannable_to_uploader and row.uploaded_by == g.user.id


def served_type(mime_type: str) -> str:
    """The Content-Type a file goes out with: its sniffed type when inert,
    else application/octet-stream."""
    if mime_type in INERT_TYPES or mime_type.startswith(INERT_PREFIXES):
        return mime_type
    return ACTIVE_FALLBACK


def attachment(relative: str, mime_type: str, download_name: str) -> Response:
    """The stored bytes at `relative`, as a download (404 if they are gone)."""
    storage = get_storage()
    served = served_type(mime_type)
    if isinstance(storage, S3Storage) and get_settings().s3_serve == "redirect":
        # The bucket answers with the type and disposition we sign into the URL.
        disposition = dump_options_header("attachment", {"filename": download_name})
        ttl = get_settings().s3_presign_seconds
        url = storage.presigned_url(relative, served, disposition, ttl)
        response = Response(status=302, headers={"Location": url})
    else:
        response = _sent(relative, served, download_name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Opened in a browser anyway (a link, a preview): no scripts, no
    # plugins, no same-origin access.
    response.headers["Content-Security-Policy"] = "sandbox"
    return response


def _sent(relative: str, mime_type: str, download_name: str) -> Response:
    """The bytes through this process: a local file as it is (sendfile), an
    object streamed from the bucket a chunk at a time."""
    storage = get_storage()
    source: Path | IO[bytes]
    size = None
    if isinstance(storage, LocalStorage):
        source = storage.absolute(relative)
        if not source.is_file():
            raise not_found()
    else:
        try:
            content = storage.open(relative)
        except ContentMissing:
            raise not_found() from None
        except StorageUnavailable as err:
            log.error("file %s not served: %s", relative, err)
            raise storage_unavailable() from err
        # Closed by the WSGI server's file wrapper once sent (or the client left).
        source, size = content.stream, content.size
    response = send_file(
        source,
        mimetype=mime_type,
        as_attachment=True,
        download_name=download_name,
        conditional=False,
        etag=False,
    )
    if size is not None:
        response.content_length = size
    return response


@operation(
    bp,
    "GET",
    "/files/<uuid:file_uuid>",
    summary="A file's metadata and statuses",
    responses={200: FileOut},
)
def get_file(session: Session, file_uuid: uuid.UUID) -> FileOut:
    return file_out(visible_file(session, file_uuid))


@operation(
    bp,
    "GET",
    "/files/<uuid:file_uuid>/content",
    summary="The file's bytes, once its scan is clean",
    responses={200: FileOut},
    binary=True,
    errors=(403, 409, 503),
)
def get_file_content(session: Session, file_uuid: uuid.UUID) -> Response:
    row = released_file(session, file_uuid)
    row.download_count += 1
    if row.virus_scan_status is not VirusScanStatus.clean:
        # Unscannable, to its uploader: uninspected bytes, never typed.
        return attachment(row.file_path, ACTIVE_FALLBACK, row.original_filename)
    # mime_type is what the worker sniffed from the bytes, never the client's claim.
    return attachment(row.file_path, row.mime_type, row.original_filename)


@operation(
    bp,
    "GET",
    "/files/<uuid:file_uuid>/thumbnail",
    summary="A rendition of the file (the nearest to ?size=), once its scan is clean",
    query=ThumbnailQuery,
    responses={200: FileOut},
    binary=True,
    errors=(403, 409, 503),
)
def get_file_thumbnail(session: Session, file_uuid: uuid.UUID, query: ThumbnailQuery) -> Response:
    row = released_file(session, file_uuid)
    path = rendition_path(row, query.size, query.still)
    if path is None:
        raise not_found()
    stem = row.original_filename.rsplit(".", 1)[0]
    # The worker writes every rendition as WebP (veza/media/): no sniffing.
    return attachment(path, THUMBNAIL_MIME_TYPE, f"{stem}-thumbnail.webp")
