"""Structured JSON logs, one object per line, for every process.

Each record carries `request_id` and `task_id` when there is one: the API
binds the request's id, the outbox stores it beside the work, the relay
publishes it as a message header, and the worker binds it again around the
task, so one id follows a write from the HTTP request into every task it
caused. Tasks a task publishes itself (a chain's next link, a `.delay`)
carry the bound id in their headers too.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import uuid

from pythonjsonlogger.json import JsonFormatter

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
# Bound by the worker around each task (worker/task_logs.py).
task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)


def bound_request_id() -> uuid.UUID | None:
    """The id of the request whose work this is: the API binds it for the
    request, a worker for each task the request caused; None elsewhere
    (beat's schedules, an operator's command)."""
    try:
        return uuid.UUID(request_id_var.get() or "")
    except ValueError:
        return None


class ContextFilter(logging.Filter):
    """Adds the bound request id and the running task's id to each record;
    a record that names its request itself (gunicorn's access line, written
    once the request is over: api/access_log.py) keeps its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        record.task_id = task_id_var.get()
        return True


_FORMATTER = JsonFormatter(
    "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(task_id)s",
    rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(_FORMATTER)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python's warnings (a library's deprecation, Celery's about running as
    # root) are records too, not plain lines on stderr.
    logging.captureWarnings(True)


def unlocked_line(logger: str, level: int, message: str) -> bytes:
    """One log line, made without taking any of logging's locks, for code
    that must not take them (a signal handler: the code it interrupted may
    hold one) and writes it with os.write itself."""
    record = logging.makeLogRecord(
        {
            "name": logger,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": message,
            "request_id": None,
            "task_id": None,
        }
    )
    return (_FORMATTER.format(record) + "\n").encode()
