"""accounts.export: a user's data export, built after commit of the request
that asked for it (veza/accounts/export.py)."""

from __future__ import annotations

from celery import shared_task

from veza import jobs
from veza.accounts.export import build_export, record_failure
from worker.base import TRANSIENT_ERRORS, VezaTask
from worker.progress import celery_progress


@shared_task(bind=True, base=VezaTask, name=jobs.EXPORT_ACCOUNT.name)
def export(self: VezaTask, export_id: int) -> bool:
    try:
        return build_export(export_id, celery_progress(self))
    except TRANSIENT_ERRORS:
        raise  # retried: the store or the database will be back
    except Exception as exc:
        record_failure(export_id, f"{type(exc).__name__}: {exc}")
        raise
