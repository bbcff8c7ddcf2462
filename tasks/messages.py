"""messages.index: what a message post, edit or delete owes, through the
outbox: the bookkeeping (veza/messages/counters.py says what it writes and
why it is safe to run twice or late), the enrichment
(veza/messages/enrichment.py: rendering, language, code snippets, links),
the moderation verdict (veza/messages/moderation.py), then the
notifications (veza/notifications/fanout.py), in transactions of
their own after the first commits. One task for all of them: a post costs one
message to the broker, not four, and each part is safe to run again.

messages.index_batch does the same for many messages at once (the relay
batches messages.index rows: worker/relay.py): the bookkeeping is one
statement per kind of counter, the enrichment one read and one write, the
moderation one read of each kind, and the notifications as few transactions
as their number of recipients allows, for the whole batch; each message's
outcome is what it would have been alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from celery import shared_task

from veza import jobs
from veza.messages.counters import index_messages
from veza.messages.enrichment import enrich_messages
from veza.messages.moderation import review_all
from veza.notifications.fanout import Transaction, notify_recipients
from worker.base import BatchRow, BatchTask, VezaTask


@shared_task(bind=True, base=VezaTask, name=jobs.INDEX_MESSAGE.name)
def index(self: VezaTask, message_id: int) -> bool:
    return bool(index_all({message_id: None}, self.transaction))


@shared_task(bind=True, base=BatchTask, name=jobs.INDEX_MESSAGES.name)
def index_batch(self: BatchTask, rows: list[BatchRow]) -> None:
    self.run_or_split(
        rows,
        lambda part: index_all(
            {args[0]: request_id for _, request_id, args in part}, self.transaction
        ),
    )


def index_all(messages: Mapping[int, str | None], transaction: Transaction) -> list[int]:
    """Index these messages (message id -> the request each was owed on
    behalf of, None for the task's own); the ids of those that exist."""
    with transaction() as session:
        found = index_messages(session, list(messages))
        enrich_messages(session, found)
        review_all(session, {message_id: messages[message_id] for message_id in found})
    notify_recipients(found, transaction)
    return found
