"""Celery: the app, its configuration from the environment, the task base
class and the outbox relay. `celery -A worker worker` finds `app` here."""

from worker.celery_app import app

__all__ = ["app"]
