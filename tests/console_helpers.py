"""What the console's tests share: its logins, the rows it acts on (a dead
outbox row, a poison message, a failed file), and the CSRF token read back
from a page as a browser would find it."""

from __future__ import annotations

import re
import uuid

from tests.factories import make_user
from tests.uploads import upload
from veza import jobs

# Two operators: the user of each is the name their actions are audited under.
LOGINS = "ops:s3cret-console,night:other-pass"
OPS = ("ops", "s3cret-console")


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found[1]


def dead_row(db, reason: str = "never finished after 5 re-drives; last error: boom") -> uuid.UUID:
    """An outbox row that owes a heartbeat, recorded dead with `reason`."""
    from db.engine import session_scope
    from veza.outbox import enqueue

    with session_scope() as session:
        row_id = enqueue(session, jobs.HEARTBEAT)
    db.execute(
        "UPDATE outbox SET sent_at = now(), dead_at = now(), dead_reason = %s, redrives = 5"
        " WHERE id = %s",
        (reason, row_id),
    )
    return row_id


def failed_file(db, reason: str = "the virus scanner is unavailable") -> int:
    """An upload whose scan got no verdict through every retry: failed,
    retryable, its content still there to be scanned again."""
    from veza.files import pipeline

    file_id = upload(db, make_user(db), b"minutes of the meeting", "minutes.txt", "text/plain")
    pipeline.hash_upload(file_id)
    pipeline.sniff(file_id)
    pipeline.scan_unavailable(file_id, reason, final=True)
    return file_id


def outbox_state(db, row_id: uuid.UUID) -> tuple:
    return db.execute(
        "SELECT sent_at IS NULL, dead_at IS NULL, finished_at IS NOT NULL FROM outbox WHERE id = %s",
        (row_id,),
    ).fetchone()


def audit_rows(db, event_type: str) -> list[dict]:
    return [
        data
        for (data,) in db.execute(
            "SELECT event_data FROM audit_logs WHERE event_type = %s ORDER BY id", (event_type,)
        )
    ]
