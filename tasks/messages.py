"""messages.index: the bookkeeping a message post (or delete) owes,
through the outbox (veza/messages/counters.py says what it writes and why
it is safe to run twice or late)."""

from __future__ import annotations

from celery import shared_task

from veza import jobs
from veza.messages.counters import index_message
from worker.base import VezaTask


@shared_task(bind=True, base=VezaTask, name=jobs.INDEX_MESSAGE.name)
def index(self: VezaTask, message_id: int) -> bool:
    with self.transaction() as session:
        return index_message(session, message_id)
