"""The console's actions: each a POST (guard.py checks its login and CSRF
token), each audited with the operator's name, each idempotent (doing it
again, or on what no longer needs it, changes nothing and says so), each
answered by a redirect to the page (POST-redirect-GET) with what happened.

They reuse the paths the command line and maintenance take: Retry is
veza.files.requeue.retry (requeue_failed_files's step, for one file),
Replay is veza.outbox.replay (`veza outbox replay`), Run now and Dry run owe
the task through the outbox, in the transaction of their audit row, and the
relay sends it where beat sends it (the maintenance queue); Cancel is
veza.maintenance.run.request_cancel.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, flash, redirect, request, url_for
from werkzeug.wrappers import Response

from console.guard import operator, refuse
from db.engine import session_scope
from veza import audit, jobs, outbox
from veza.files import requeue
from veza.jobs import Job
from veza.maintenance.run import request_cancel

bp = Blueprint("actions", __name__)


def back(section: str, message: str, category: str = "done") -> Response:
    flash(message, category)
    return redirect(url_for("pages.index", _anchor=section), 303)


def answer(section: str, done: bool, did: str, nothing: str) -> Response:
    """Back to `section`, saying what was done, or that nothing needed it."""
    return back(section, did) if done else back(section, f"{nothing}: nothing to do", "noop")


@bp.post("/files/<int:file_id>/retry")
def retry_file(file_id: int) -> Response:
    return answer(
        "files",
        requeue.retry(file_id, operator()),
        f"file {file_id} is pending again: the pipeline runs it afresh",
        f"file {file_id} is not failed (retried already, done, or infected)",
    )


@bp.post("/outbox/<uuid:row_id>/replay")
def replay_row(row_id: uuid.UUID) -> Response:
    return answer(
        "outbox",
        bool(outbox.replay([row_id], operator())),
        f"outbox row {row_id} is unsent again: the relay sends it",
        f"outbox row {row_id} is not dead (replayed already, or done)",
    )


@bp.post("/outbox/replay-dead")
def replay_dead() -> Response:
    replayed = outbox.replay(None, operator())
    return answer(
        "outbox",
        bool(replayed),
        f"{len(replayed)} dead rows are unsent again: the relay sends them",
        "no dead outbox rows",
    )


MAINTENANCE = {job.name.removeprefix("maintenance."): job for job in jobs.MAINTENANCE}


@bp.post("/maintenance/<task>/run")
def run_task(task: str) -> Response:
    job = MAINTENANCE.get(task) or abort(404, f"no maintenance task {task!r}")
    dry_run = {"0": False, "1": True}.get(request.form.get("dry_run", "0"))
    if dry_run is None:
        refuse("dry_run must be 0 or 1", 400)
    owed = request_run(job, dry_run, operator())
    what = "a dry run of" if dry_run else "a run of"
    return back(
        "runs",
        f"{what} {task} is owed (outbox {owed}): it starts when the maintenance worker takes it;"
        " while another run of it holds the lock it is recorded skipped",
    )


def request_run(job: Job, dry_run: bool, operator: str) -> uuid.UUID:
    """Owe a run of `job`, audited in the same transaction: the request and
    its record commit together, and the relay sends the task as beat
    would, by name, so that it lands on the maintenance queue."""
    with session_scope() as session:
        owed = outbox.enqueue(session, job, dry_run=dry_run)
        audit.record(
            session,
            "maintenance.run_requested",
            {"operator": operator, "task": job.name, "dry_run": dry_run, "outbox_id": str(owed)},
            resource_type="maintenance_run",
        )
    return owed


@bp.post("/runs/<int:run_id>/cancel")
def cancel_run(run_id: int) -> Response:
    return answer(
        "runs",
        request_cancel(run_id, operator()),
        f"run {run_id} is asked to stop: it ends cancelled at its next batch",
        f"run {run_id} is not running",
    )
