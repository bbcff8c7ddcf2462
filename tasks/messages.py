"""messages.index: what a message post, edit or delete owes, through the
outbox: the bookkeeping (veza/messages/counters.py says what it writes and
why it is safe to run twice or late) and the enrichment
(veza/messages/enrichment.py: rendering, language, code snippets, links).
One task for both: a post costs one message to the broker, not two."""

from __future__ import annotations

from celery import shared_task

from veza import jobs
from veza.messages.counters import index_message
from veza.messages.enrichment import enrich_message
from worker.base import VezaTask


@shared_task(bind=True, base=VezaTask, name=jobs.INDEX_MESSAGE.name)
def index(self: VezaTask, message_id: int) -> bool:
    with self.transaction() as session:
        if not index_message(session, message_id):
            return False
        enrich_message(session, message_id)
        return True
