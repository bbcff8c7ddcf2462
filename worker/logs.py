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

from celery import current_task
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun
from pythonjsonlogger.json import JsonFormatter

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class ContextFilter(logging.Filter):
    """Adds the bound request id and the running task's id to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        task = current_task
        record.task_id = task.request.id if task and task.request.id else None
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(task_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@setup_logging.connect
def _celery_uses_our_logging(loglevel=None, **_: object) -> None:
    # Connecting this signal stops Celery from installing its own handlers.
    from worker.config import settings

    configure_logging(loglevel or settings.log_level)


@task_prerun.connect
def _bind_request_id(task=None, **_: object) -> None:
    task.request.veza_log_token = request_id_var.set(getattr(task.request, "request_id", None))


@task_postrun.connect
def _unbind_request_id(task=None, **_: object) -> None:
    token = getattr(task.request, "veza_log_token", None)
    if token is not None:
        request_id_var.reset(token)


@before_task_publish.connect
def _pass_request_id_on(headers=None, **_: object) -> None:
    """A message sent while a request id is bound (from inside a task, or a
    request) carries it, unless its sender set one: the relay's header wins."""
    request_id = request_id_var.get()
    if request_id is not None and headers is not None and headers.get("request_id") is None:
        headers["request_id"] = request_id
