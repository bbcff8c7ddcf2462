"""Maintenance runs as Celery tasks.

`maintenance_task(job)` registers a plain function `body(run, **options)`
(veza/maintenance/run.py has the rules it runs under: one at a time, run
log, audit, phases, progress) as the Celery task of `job`, on the
maintenance queue, with maintenance's time limits, its result kept for
Flower, and its progress published as task state PROGRESS plus a
`task-progress` event (worker/progress.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task, shared_task

from veza import limits
from veza.jobs import Job
from veza.maintenance.run import run_exclusively
from worker.base import VezaTask
from worker.progress import celery_progress


def maintenance_task(job: Job) -> Callable[[Callable[..., None]], Task]:
    """Register `body(run, **options)` as the maintenance task of `job`."""

    def register(body: Callable[..., None]) -> Task:
        def task(self: VezaTask, dry_run: bool = False, **options: Any) -> dict[str, Any]:
            return run_exclusively(
                job.name,
                body,
                dry_run,
                options,
                task_id=self.request.id,
                report=celery_progress(self),
            )

        task.__doc__ = body.__doc__
        task.__name__ = body.__name__
        return shared_task(
            bind=True,
            base=VezaTask,
            name=job.name,
            # The run's state must reach the result backend for Flower.
            ignore_result=False,
            soft_time_limit=limits.MAINTENANCE_TIME_LIMITS[0],
            time_limit=limits.MAINTENANCE_TIME_LIMITS[1],
        )(task)

    return register
