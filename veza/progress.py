"""Progress of a long job, as the domain code reports it.

A job (a maintenance run, a file step on a big upload) hands a plain dict
of where it is (`phase`, counts, bytes) to a `ProgressReport`; the Celery
side (worker/progress.py) turns that into task state PROGRESS and a
`task-progress` event Flower shows. Here there is no Celery: the core
imports no framework.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

ProgressReport = Callable[[dict[str, Any]], None]

INTERVAL_SECONDS = 1.0


def nowhere(meta: dict[str, Any]) -> None:
    """The report of a job nobody watches (a direct call, a test)."""


class Throttled:
    """`report`, at most once per `interval` seconds: a job calls it after
    every chunk it reads, and Redis and Flower see one update a second.
    A forced call (a new phase, the end) always goes through."""

    def __init__(self, report: ProgressReport, interval: float | None = None) -> None:
        self.report = report
        self.interval = INTERVAL_SECONDS if interval is None else interval
        self._last: float | None = None

    def __call__(self, meta: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        self.report(meta)
