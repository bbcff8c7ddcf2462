"""Per-user upload quotas: bytes per day and files per hour, over rolling
windows counted from the files table (UPLOAD_QUOTA_BYTES_PER_DAY,
UPLOAD_QUOTA_FILES_PER_HOUR; 0 is unlimited). Every row a user uploaded
counts, whatever became of it (an infected or unscannable file cost the
storage and the scan too); a deleted row no longer does.

Refused: 429 `upload_quota_exceeded` with `Retry-After`, the seconds until
enough of the window's uploads have aged out for this one to fit. An upload
larger than the whole daily quota can never fit: 413. Checked twice: before
the bytes are stored (what is already used), and after, with the upload's
size, under a per-user advisory lock held until the row commits, so that two
concurrent uploads of one user cannot both slip in. Counted by
idx_files_uploader_created (uploaded_by, created_at).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from api.errors import ApiError
from veza.settings import get_settings

# The key space of the per-user lock (pg_advisory_xact_lock's two-integer
# form, which never meets the one-bigint locks on content hashes).
QUOTA_LOCK_CLASS = 0x5155  # "QU"
DAY, HOUR = 86_400, 3_600


# What one user uploaded within the last :secs seconds: files and bytes.
USED = text(
    "SELECT count(*), COALESCE(sum(file_size), 0) FROM files"
    " WHERE uploaded_by = :user AND created_at > now() - make_interval(secs => :secs)"
)
# Seconds until the oldest of those uploads, leaving the window first, add
# up to :excess (files, or bytes when :by_bytes).
WAIT = text(
    "SELECT EXTRACT(epoch FROM created_at + make_interval(secs => :secs) - now())"
    " FROM (SELECT created_at,"
    "        CASE WHEN :by_bytes THEN sum(file_size) OVER w ELSE count(*) OVER w END AS freed"
    "       FROM files"
    "       WHERE uploaded_by = :user AND created_at > now() - make_interval(secs => :secs)"
    "       WINDOW w AS (ORDER BY created_at, id)) AS aging"
    " WHERE freed >= :excess ORDER BY created_at LIMIT 1"
)


@dataclass(frozen=True)
class _Window:
    seconds: int
    limit: int
    by_bytes: bool

    def describe(self) -> str:
        return f"{self.limit} {'bytes' if self.by_bytes else 'files'} per " + (
            "day" if self.seconds == DAY else "hour"
        )


def lock_user_quota(session: Session, user_id: int) -> None:
    session.execute(
        text("SELECT pg_advisory_xact_lock(:cls, :user)"),
        {"cls": QUOTA_LOCK_CLASS, "user": user_id},
    )


def check_upload_quota(session: Session, user_id: int, size: int) -> None:
    """Refuse (ApiError) an upload of `size` bytes (0: before the bytes are
    known) that would take the user past a quota."""
    settings = get_settings()
    bytes_per_day = settings.upload_quota_bytes_per_day
    if bytes_per_day and size > bytes_per_day:
        raise ApiError(
            413,
            "file_too_large",
            f"Files are limited to your daily upload quota of {bytes_per_day} bytes.",
            {"file": f"larger than {bytes_per_day} bytes"},
        )
    files = _Window(HOUR, settings.upload_quota_files_per_hour, by_bytes=False)
    if files.limit:
        _check_window(session, user_id, files, needed=1)
    day = _Window(DAY, bytes_per_day, by_bytes=True)
    if day.limit:
        _check_window(session, user_id, day, needed=max(size, 1))


def _check_window(session: Session, user_id: int, window: _Window, needed: int) -> None:
    """`needed` more (one file, or the upload's bytes) must fit within the
    window's limit; else 429 with the wait until enough has aged out."""
    params = {"user": user_id, "secs": window.seconds}
    used_files, used_bytes = session.execute(USED, params).one()
    excess = int(used_bytes if window.by_bytes else used_files) + needed - window.limit
    if excess <= 0:
        return
    wait = session.scalar(WAIT, {**params, "by_bytes": window.by_bytes, "excess": excess})
    retry_after = max(1, math.ceil(float(wait if wait is not None else window.seconds)))
    what = "bytes" if window.by_bytes else "files"
    raise ApiError(
        429,
        "upload_quota_exceeded",
        f"Upload quota reached ({window.describe()}); try again in {retry_after}s.",
        {"quota": what, "limit": window.limit, "retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )
