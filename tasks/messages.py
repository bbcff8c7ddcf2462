"""messages.index: what a message post, edit or delete owes, through the
outbox: the bookkeeping (veza/messages/counters.py says what it writes and
why it is safe to run twice or late), the enrichment
(veza/messages/enrichment.py: rendering, language, code snippets, links),
the moderation verdict (veza/messages/moderation.py), then the
notifications (veza/notifications/fanout.py), in transactions of
their own after the first commits. One task for all three: a post costs one
message to the broker, not three, and each part is safe to run again."""

from __future__ import annotations

from celery import shared_task

from veza import jobs
from veza.messages.counters import index_message
from veza.messages.enrichment import enrich_message
from veza.messages.moderation import review
from veza.notifications.fanout import notify_recipients
from worker.base import VezaTask


@shared_task(bind=True, base=VezaTask, name=jobs.INDEX_MESSAGE.name)
def index(self: VezaTask, message_id: int) -> bool:
    with self.transaction() as session:
        if not index_message(session, message_id):
            return False
        enrich_message(session, message_id)
        review(session, message_id)
    notify_recipients(message_id, self.transaction)
    return True
