"""Structured logs: one JSON object per line, with the request id that
travelled through the outbox, and the task id; and the same id on the
audit rows that the request's work writes."""

from __future__ import annotations

import io
import json
import uuid

import pytest

from tests.clamav import EICAR
from tests.conftest import start_worker, wait_for
from tests.factories import make_user
from tests.uploads import encoded, gradient, upload
from veza import jobs

pytestmark = pytest.mark.slow


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_the_request_id_travels_from_the_outbox_into_the_tasks_logs(db, celery_worker, relay):
    from db.engine import session_scope
    from veza.outbox import enqueue

    request_id = uuid.uuid4()
    with session_scope() as session:
        task_id = enqueue(session, jobs.HEARTBEAT, request_id=request_id)

    def task_lines() -> list[dict]:
        return [r for r in json_lines(celery_worker.output()) if r.get("task_id") == str(task_id)]

    lines = wait_for(task_lines, timeout=30, what="the task's log lines")
    assert all(r["request_id"] == str(request_id) for r in lines)
    assert {"time", "level", "logger", "message"} <= set(lines[0])


def test_the_request_id_reaches_the_chained_scan_and_thumbnail_tasks(db, clamd_server, relay):
    """files.process chains files.scan and files.thumbnail itself: the id
    must travel with those messages too."""
    from db.engine import session_scope
    from veza.outbox import enqueue

    worker = start_worker("files", queues="files,scan")
    try:
        file_id = upload(db, make_user(db), encoded(gradient(64, 64), "PNG"), "p.png", "image/png")
        request_id = str(uuid.uuid4())
        with session_scope() as session:
            enqueue(session, jobs.PROCESS_FILE, file_id, request_id=request_id)

        def step_lines() -> dict[str, list[dict]]:
            lines = [
                r for r in json_lines(worker.output()) if r.get("logger") == "veza.files.pipeline"
            ]
            steps = {
                step: [r for r in lines if f": {step}:" in r["message"]]
                for step in ("scan", "thumbnail")
            }
            return steps if all(steps.values()) else {}

        steps = wait_for(step_lines, timeout=60, what="the scan and thumbnail log lines")
    finally:
        worker.stop()
    for step, lines in steps.items():
        assert [r["request_id"] for r in lines] == [request_id] * len(lines), step
        assert all(r["task_id"] for r in lines), step


def test_api_log_lines_carry_the_request_id(database_url, caplog):
    import logging

    from flask import current_app

    from api import create_app
    from veza.logs import ContextFilter

    app = create_app({"TESTING": True})

    @app.get("/_probe/log")
    def log_something():
        current_app.logger.info("handling the probe")
        return {}

    request_id = str(uuid.uuid4())
    caplog.handler.addFilter(ContextFilter())
    with caplog.at_level(logging.INFO):
        response = app.test_client().get("/_probe/log", headers={"X-Request-ID": request_id})
    assert response.headers["X-Request-ID"] == request_id
    records = [r for r in caplog.records if r.getMessage() == "handling the probe"]
    assert records
    assert records[0].request_id == request_id


def test_an_infected_upload_is_audited_with_the_uploads_request_id(api, db, clamd_server, relay):
    """file.infected is written by the scan worker, long after the upload's
    request: it carries that request's id, so the alert leads to the upload."""
    worker = start_worker("files", queues="files,scan")
    try:
        alice = api.register()
        room = api.room(alice)
        request_id = str(uuid.uuid4())
        response = api.post(
            f"/rooms/{room}/files",
            alice,
            content_type="multipart/form-data",
            headers={"X-Request-ID": request_id},
            data={"file": (io.BytesIO(EICAR), "notes.txt", "text/plain")},
        )
        assert response.status_code == 202
        infected = wait_for(
            lambda: db.execute(
                "SELECT request_id::text, resource_id FROM audit_logs"
                " WHERE event_type = 'file.infected'"
            ).fetchall(),
            timeout=60,
            what="the file.infected audit row",
        )
    finally:
        worker.stop()
    assert infected == [(request_id, response.json["id"])]
