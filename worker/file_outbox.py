"""The work a file is owed, through the outbox, with a link back from the
file row.

Every files.process or files.scan owed for a file (the upload, the
maintenance jobs' requeues and rescans) goes through `owe`, which records
the outbox row's id in the file's metadata.outbox_id. By that link, a
primary-key lookup where task name and args would need a scan of the whole
outbox, the stuck-file check (worker/maintenance/file_jobs.py) reads whether
the latest work was sent and started, and so tells a file waiting behind a
backlog from one whose work started and stalled. Kept apart from
worker/file_steps.py so that the API does not load the pipeline (Pillow,
libmagic) to enqueue it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from worker import outbox


def owe(session: Session, task_name: str, file_id: int, **options: Any) -> uuid.UUID:
    """Owe `task_name(file_id)`, in the caller's transaction, and link it."""
    outbox_id = outbox.enqueue(session, task_name, file_id, **options)
    session.execute(text(
        "UPDATE files SET metadata = metadata || jsonb_build_object('outbox_id', CAST(:outbox_id AS text))"
        " WHERE id = :id"
    ), {"outbox_id": str(outbox_id), "id": file_id})
    return outbox_id
