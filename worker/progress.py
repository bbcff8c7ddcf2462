"""A job's progress, where operators see it: the task's state and Flower.

`celery_progress(task)` is the ProgressReport (veza/progress.py) of a
running Celery task. Each report

- sets the task's state to PROGRESS with the report as its meta, in the
  result backend (`AsyncResult(id).info`), when the task keeps its result:
  a task that ignores results never stores its SUCCESS, so a stored
  PROGRESS would outlive it;
- sends a `task-progress` event with the report's fields and a `result`
  field: saferepr of the report, the form Celery gives a succeeded task's
  result. Flower's task page and `/api/task/info/<id>` show only the
  fields of Celery's event-state Task (celery/events/state.py,
  `Task._fields`), so the report's own keys stay hidden there while
  `result` shows. A custom state ranks above STARTED and below SUCCESS and
  FAILURE (celery.states.precedence), so the task reads PROGRESS with the
  live report until its succeeded or failed event replaces state and
  result with the real ones.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.utils.saferepr import saferepr

from veza.progress import ProgressReport, nowhere

PROGRESS = "PROGRESS"


def celery_progress(task: Task) -> ProgressReport:
    """The report of the task `task` is running; nowhere for a direct call."""
    request = task.request
    if request.called_directly or not request.id:
        return nowhere
    store = not task.ignore_result

    def report(meta: dict[str, Any]) -> None:
        if store:
            task.update_state(state=PROGRESS, meta=meta)
        if not request.is_eager:
            task.send_event("task-progress", result=saferepr(meta, task.resultrepr_maxsize), **meta)

    return report
