"""The work a file is owed, through the outbox, with a link back from the
file row.

Every files.process or files.scan owed for a file (the upload, the
maintenance jobs' requeues and rescans) goes through `owe`, which records
the outbox row's id in the file's metadata.outbox_id. By that link, a
primary-key lookup where task name and args would need a scan of the whole
outbox, the stuck-file check (veza/files/requeue.py) reads whether
the latest work was sent and started, and so tells a file waiting behind a
backlog from one whose work started and stalled. Kept apart from
veza/files/pipeline.py so that the API does not load the pipeline (Pillow,
libmagic) to enqueue it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from veza import outbox
from veza.jobs import Job


def owe(session: Session, job: Job, file_id: int, **options: Any) -> uuid.UUID:
    """Owe `job(file_id)`, in the caller's transaction, and link it."""
    outbox_id = outbox.enqueue(session, job, file_id, **options)
    session.execute(
        text(
            "UPDATE files"
            " SET metadata = metadata || jsonb_build_object('outbox_id', CAST(:outbox_id AS text))"
            " WHERE id = :id"
        ),
        {"outbox_id": str(outbox_id), "id": file_id},
    )
    return outbox_id
