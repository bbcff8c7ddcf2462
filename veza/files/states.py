"""A file's one state, from its two status columns and its recorded failure,
for those who watch the pipeline (the operator console): how many files are
in each, the oldest one not done, and the files failed in each way.

The states: `pending`, `processing` and `scanning` (not done); `clean` (done,
served); `infected`; `unscannable` (failed for good: nothing could read it
whole, pipeline.is_unscannable); `failed` (any other failure, for good or
retryable: requeue.RETRYABLE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql
from sqlalchemy import Row

from db.engine import session_scope
from veza.files.pipeline import UNSCANNABLE
from veza.statements import compose

STATES = ("pending", "processing", "scanning", "clean", "infected", "failed", "unscannable")
STATE = sql.SQL(
    "CASE"
    " WHEN virus_scan_status = 'infected' THEN 'infected'"
    " WHEN virus_scan_status = 'failed' AND metadata->>'failure_reason' LIKE :unscannable"
    "  THEN 'unscannable'"
    " WHEN processing_status = 'failed' OR virus_scan_status = 'failed' THEN 'failed'"
    " WHEN virus_scan_status = 'scanning' THEN 'scanning'"
    " WHEN processing_status = 'completed' AND virus_scan_status = 'clean' THEN 'clean'"
    " ELSE processing_status::text END"
)
# `unscannable: <why>`, as pipeline._record_unscannable writes it.
_PARAMS = {"unscannable": f"{UNSCANNABLE}: %"}
NOT_DONE = "(processing_status IN ('pending', 'processing') OR virus_scan_status = 'scanning')"
# What a failed file says went wrong: its final failure, a stuck file's
# error, or the scanner's last answer.
_REASON = "COALESCE(metadata->>'failure_reason', metadata->>'error', virus_scan_result) AS reason"


def counts() -> dict[str, int]:
    """Files by state, in STATES' order, each of them included."""
    with session_scope() as session:
        rows = session.execute(
            compose("SELECT {state} AS state, count(*) AS n FROM files GROUP BY 1", state=STATE),
            _PARAMS,
        ).all()
    found: dict[str, int] = {row.state: row.n for row in rows}
    every = {state: found.pop(state, 0) for state in STATES}
    # A combination of statuses no state names (completed, its scan still
    # pending) is counted under its processing status: it shows up.
    return every | found


def oldest_not_done() -> Row[Any] | None:
    """The file waiting longest for its pipeline to finish, if any."""
    with session_scope() as session:
        return session.execute(
            compose(
                "SELECT id, original_filename, created_at, {state} AS state FROM files"
                f" WHERE {NOT_DONE} ORDER BY created_at, id LIMIT 1",
                state=STATE,
            ),
            _PARAMS,
        ).one_or_none()


def in_state(state: str, limit: int = 50) -> Sequence[Row[Any]]:
    """The files in `state` (`failed`, `unscannable`...), newest first, each
    with its failed step and reason."""
    with session_scope() as session:
        return session.execute(
            compose(
                "SELECT id, original_filename, created_at, metadata->>'failed_step' AS step,"
                f" {_REASON} FROM files WHERE {{state}} = :wanted"
                " ORDER BY created_at DESC, id DESC LIMIT :limit",
                state=STATE,
            ),
            {**_PARAMS, "wanted": state, "limit": limit},
        ).all()


def state_of(file_id: int) -> str | None:
    """One file's state; None when there is no such file."""
    with session_scope() as session:
        found: str | None = session.execute(
            compose("SELECT {state} FROM files WHERE id = :id", state=STATE),
            {**_PARAMS, "id": file_id},
        ).scalar_one_or_none()
    return found
