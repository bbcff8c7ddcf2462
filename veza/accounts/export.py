"""A user's data export (POST /users/me/export, the accounts.export task):
one zip in storage with everything the user gave the server, which they
download until EXPORT_RETENTION_HOURS after it was made.

What the zip holds (README.txt inside says the same):
- profile.json: the account as the seed describes a user, email included;
- sessions.jsonl, memberships.jsonl (rooms and DMs), messages.jsonl (every
  message they wrote, deleted ones marked), reactions.jsonl, files.jsonl
  (their uploads' metadata), one JSON object per line;
- files/<uuid>/<name>: the bytes of each upload whose scan said clean. A
  file never scanned clean is listed without its bytes: an export is
  served as files are, fail closed.

Constant memory, whatever the history: rows come from PostgreSQL in pages
(yield_per), each already JSON (row_to_json), and go into the zip member
being written, which deflates as it goes; a file's bytes are copied a chunk
at a time. Each section reads in its own transaction, so no transaction
stays open across the whole export. Progress (phase, rows, bytes) goes to
the task's state and Flower, throttled, and the phase to the row, which
GET /users/me/exports/{id} shows.

Idempotent: the export's zip is written under its own name, whole or not at
all (the store's atomic writer), and a re-run of an export that did not
finish starts it again; a finished one is left as it is.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import closing
from typing import Any, BinaryIO

from sqlalchemy import text

from db.engine import affected, session_scope
from veza.maintenance.batched import KeysetBatches
from veza.maintenance.run import Run
from veza.progress import ProgressReport, Throttled
from veza.settings import get_settings
from veza.storage import ContentMissing, get_storage

# Rows fetched per round trip while a section streams.
PAGE_ROWS = 1000
CHUNK_BYTES = 1 << 20

README = """Your data on Veza, as exported on request.

profile.json       your account
sessions.jsonl     your sign-ins (devices, addresses, activity)
memberships.jsonl  the rooms and direct conversations you are in
messages.jsonl     every message you wrote (deleted ones marked is_deleted)
reactions.jsonl    your reactions
files.jsonl        your uploads; files/<uuid>/ holds the bytes of each one
                   whose virus scan said clean
"""

# Each section: its member name and the query of its rows, as JSON text.
SECTIONS = {
    "profile.json": """
        SELECT json_build_object('id', id, 'uuid', uuid, 'username', username, 'email', email,
            'display_name', display_name, 'bio', bio, 'avatar_url', avatar_url,
            'status_message', status_message, 'timezone', timezone, 'language', language,
            'role', role, 'is_verified', is_verified, 'totp_enabled', totp_enabled,
            'email_notifications', email_notifications, 'last_login_at', last_login_at,
            'last_seen_at', last_seen_at, 'created_at', created_at, 'updated_at', updated_at)::text
        FROM users WHERE id = :user_id""",
    "sessions.jsonl": """
        SELECT row_to_json(s)::text FROM (
            SELECT id, created_at, last_activity_at, expires_at, is_active, ip_address,
                   user_agent, device_info, location_info
            FROM user_sessions WHERE user_id = :user_id ORDER BY created_at) s""",
    "memberships.jsonl": """
        SELECT row_to_json(m)::text FROM (
            SELECT 'room' AS kind, rm.room_id, r.name AS room_name, rm.role::text AS role,
                   rm.notification_level::text AS notification_level, rm.joined_at,
                   NULL::integer AS conversation_id
            FROM room_members rm JOIN rooms r ON r.id = rm.room_id WHERE rm.user_id = :user_id
            UNION ALL
            SELECT 'dm', NULL, NULL, NULL, p.notification_level::text, p.joined_at,
                   p.conversation_id
            FROM direct_conversation_participants p WHERE p.user_id = :user_id) m""",
    "messages.jsonl": """
        SELECT row_to_json(m)::text FROM (
            SELECT id, uuid, room_id, conversation_id, parent_message_id, content,
                   content_type::text AS content_type, raw_content, is_edited, edited_at,
                   is_deleted, deleted_at, is_pinned, metadata, created_at
            FROM messages WHERE author_id = :user_id ORDER BY created_at, id) m""",
    "reactions.jsonl": """
        SELECT row_to_json(r)::text FROM (
            SELECT message_id, emoji, created_at FROM reactions WHERE user_id = :user_id
            ORDER BY id) r""",
    "files.jsonl": """
        SELECT row_to_json(f)::text FROM (
            SELECT uuid, original_filename, file_size, mime_type, room_id, conversation_id,
                   message_id, virus_scan_status::text AS virus_scan_status, created_at
            FROM files WHERE uploaded_by = :user_id ORDER BY id) f""",
}

CLEAN_FILES = """
SELECT uuid, original_filename, file_path FROM files
WHERE uploaded_by = :user_id AND virus_scan_status = 'clean' ORDER BY id
"""

CLAIM = """
UPDATE data_exports SET status = 'running', phase = NULL, error = NULL
WHERE id = :id AND status IN ('pending', 'running')
RETURNING user_id
"""

FINISH = """
UPDATE data_exports SET status = 'done', phase = NULL, storage_path = :path,
       size_bytes = :size, finished_at = now(),
       expires_at = now() + make_interval(hours => :hours)
WHERE id = :id AND status = 'running'
"""


def export_path(export_id: int) -> str:
    return f"exports/{export_id}.zip"


def build_export(export_id: int, report: ProgressReport) -> bool:
    """Build the export's zip; False when there is nothing to build (it is
    done already, failed, expired, or gone)."""
    with session_scope() as session:
        user_id = session.scalar(text(CLAIM), {"id": export_id})
    if user_id is None:
        return False
    storage = get_storage()
    path = export_path(export_id)
    progress = Progress(export_id, Throttled(report))
    with storage.atomic_writer(path) as out:
        write_zip(out, user_id, progress)
    stored = storage.open(path)
    stored.stream.close()
    with session_scope() as session:
        finished = affected(
            session.execute(
                text(FINISH),
                {
                    "id": export_id,
                    "path": path,
                    "size": stored.size,
                    "hours": get_settings().export_retention_hours,
                },
            )
        )
    if not finished:  # failed meanwhile (the account was erased): nobody gets it
        storage.remove(path)
        return False
    progress.phase("done")
    return True


class Progress:
    """Where an export is: the phase in its row (for the API), and phase,
    rows and bytes to the task's report (throttled, for Flower)."""

    def __init__(self, export_id: int, report: Throttled) -> None:
        self.export_id, self.report = export_id, report
        self.name, self.rows, self.bytes = "", 0, 0

    def phase(self, name: str) -> None:
        self.name = name
        if name != "done":
            with session_scope() as session:
                session.execute(
                    text("UPDATE data_exports SET phase = :phase WHERE id = :id"),
                    {"phase": name, "id": self.export_id},
                )
        self.report(self._meta(), force=True)

    def add(self, rows: int = 0, written: int = 0) -> None:
        self.rows, self.bytes = self.rows + rows, self.bytes + written
        self.report(self._meta())

    def _meta(self) -> dict[str, Any]:
        return {
            "export_id": self.export_id,
            "phase": self.name,
            "rows": self.rows,
            "bytes": self.bytes,
        }


def write_zip(out: BinaryIO, user_id: int, progress: Progress) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", README)
        for name, query in SECTIONS.items():
            progress.phase(name)
            with archive.open(name, "w", force_zip64=True) as member:
                for line in _json_rows(query, user_id):
                    data = (line + "\n").encode()
                    member.write(data)
                    progress.add(rows=1, written=len(data))
        progress.phase("files")
        for file_uuid, filename, relative in _clean_files(user_id):
            _copy_file(archive, f"files/{file_uuid}/{_safe(filename)}", relative, progress)


def _json_rows(query: str, user_id: int) -> Iterator[str]:
    """The section's rows, a page at a time, in a transaction of its own."""
    with session_scope() as session:
        result = session.execute(
            text(query), {"user_id": user_id}, execution_options={"yield_per": PAGE_ROWS}
        )
        for (line,) in result:
            yield line


def _clean_files(user_id: int) -> list[tuple[str, str, str]]:
    with session_scope() as session:
        rows = session.execute(text(CLEAN_FILES), {"user_id": user_id})
        return [(str(u), name, path) for u, name, path in rows]


def _copy_file(archive: zipfile.ZipFile, name: str, relative: str, progress: Progress) -> None:
    """The file's bytes into the zip, a chunk at a time; a blob gone since
    (expired and purged meanwhile) is left out, not an error."""
    try:
        stored = get_storage().open(relative)
    except ContentMissing:
        return
    with closing(stored.stream) as source, archive.open(name, "w", force_zip64=True) as member:
        while chunk := source.read(CHUNK_BYTES):
            member.write(chunk)
            progress.add(written=len(chunk))


def _safe(filename: str) -> str:
    """A member name that stays in its directory when unzipped."""
    name = filename.replace("\\", "_").replace("/", "_").strip(". ")
    return name or "file"


def record_failure(export_id: int, reason: str) -> None:
    """An export that failed for good says why (GET /users/me/exports/{id})."""
    with session_scope() as session:
        session.execute(
            text(
                "UPDATE data_exports SET status = 'failed', error = :reason, finished_at = now()"
                " WHERE id = :id AND status IN ('pending', 'running')"
            ),
            {"id": export_id, "reason": reason[:1000]},
        )


def purge_expired_exports(run: Run) -> None:
    """Zips past their download window, removed from storage; the row stays,
    'expired', as the record that an export was made. A batch per
    transaction; the row is updated in the transaction that holds it, after
    its zip is gone (removing is idempotent, so a crash between the two
    only repeats it)."""
    batches = KeysetBatches(
        run,
        "SELECT id, storage_path FROM data_exports"
        " WHERE status = 'done' AND expires_at < now() AND {after}"
        " ORDER BY {key} LIMIT :size FOR UPDATE SKIP LOCKED",
        key=("id",),
    )
    storage = get_storage()
    for session, rows in batches:
        if run.dry_run:
            run.add(exports_expired=len(rows))
            continue
        for row in rows:
            if row.storage_path:
                storage.remove(row.storage_path)
        session.execute(
            text(
                "UPDATE data_exports SET status = 'expired', storage_path = NULL"
                " WHERE id = ANY(:ids)"
            ),
            {"ids": [row.id for row in rows]},
        )
        run.add(exports_expired=len(rows))
