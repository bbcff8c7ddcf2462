"""The JSON logs of veza/logs.py, in Celery processes: Celery uses our
logging setup, and the request id and task id are bound around every task
and passed on in the headers of every message a task (or a request)
publishes."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

import celery.apps.worker
from celery import Task
from celery.signals import (
    before_task_publish,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
)
from celery.utils.log import get_multiprocessing_logger

from veza.logs import configure_logging, request_id_var, task_id_var, unlocked_line


@setup_logging.connect
def _celery_uses_our_logging(loglevel: str | None = None, **_: object) -> None:
    # Connecting this signal stops Celery from installing its own handlers.
    from veza.settings import get_settings

    configure_logging(loglevel or get_settings().log_level)
    # The pool's own logger ("Process 'ForkPoolWorker-1' exited with ...")
    # does not propagate to the root: it gets the same JSON handler, or its
    # lines reach stderr as plain text through logging's last resort.
    get_multiprocessing_logger().handlers[:] = logging.getLogger().handlers


@celeryd_init.connect
def _worker_logs_from_its_start(**_: object) -> None:
    """A worker warns (running as root) before it sets up its logging:
    with the JSON handler in place already, that warning is a JSON line."""
    _celery_uses_our_logging()


def _say_in_json(message: str, f: Any = sys.__stderr__) -> None:
    """What a worker says from its signal handlers ("worker: Warm shutdown
    (MainProcess)"), which Celery writes with os.write past logging (whose
    locks a signal handler must not take): written the same way, as a JSON
    line. Replaces celery.apps.worker.safe_say, below."""
    # As Celery's: a notice lost never stops the shutdown.
    with contextlib.suppress(AttributeError, OSError):
        os.write(f.fileno(), unlocked_line("celery.apps.worker", logging.WARNING, message.strip()))


celery.apps.worker.safe_say = _say_in_json


@task_prerun.connect
def _bind_request_id(task: Task, **_: object) -> None:
    task.request.veza_log_tokens = (
        request_id_var.set(getattr(task.request, "request_id", None)),
        task_id_var.set(task.request.id),
    )


@task_postrun.connect
def _unbind_request_id(task: Task, **_: object) -> None:
    tokens = getattr(task.request, "veza_log_tokens", None)
    if tokens is not None:
        request_id_var.reset(tokens[0])
        task_id_var.reset(tokens[1])


@before_task_publish.connect
def _pass_request_id_on(headers: dict[str, Any] | None = None, **_: object) -> None:
    """A message sent while a request id is bound (from inside a task, or a
    request) carries it, unless its sender set one: the relay's header wins."""
    request_id = request_id_var.get()
    if request_id is not None and headers is not None and headers.get("request_id") is None:
        headers["request_id"] = request_id
