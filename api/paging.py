"""Keyset paging of lists ordered by last activity, newest first (the
rooms one may join, one's DMs): a page ends at (activity, id), and the next
one starts strictly after it in that order, so a row that becomes active
meanwhile moves to the front instead of shifting every later page.

The cursor is that pair as text, `<microseconds since the epoch>-<id>`:
exact (no float), and plain in a query string (an ISO time's `+` is not).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def cursor_after(activity: datetime, row_id: int) -> str:
    return f"{(activity - EPOCH) // MICROSECOND}-{row_id}"


def cursor_position(cursor: str) -> tuple[datetime, int]:
    """The (activity, id) a cursor names; the schema checked its form."""
    micros, row_id = cursor.split("-")
    return EPOCH + int(micros) * MICROSECOND, int(row_id)
