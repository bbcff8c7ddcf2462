"""messages.index: the bookkeeping a message post (or delete) owes, done
after commit through the outbox.

Everything it writes is a recount or a GREATEST, never an increment, so
running it twice (at-least-once delivery) or late (after a Redis outage)
leaves the same result:
  - the author's room_members.message_count = their live messages in the room;
  - in a DM, each other participant's unread_count = live messages from
    others after their last read marker;
  - the author's users.last_seen_at moves up to the message's time.
A message that no longer exists is simply nothing to do.
"""

from __future__ import annotations

from celery import shared_task
from sqlalchemy import text

from worker.base import VezaTask

RECOUNT_ROOM_MEMBER = """
UPDATE room_members rm
SET message_count = (SELECT count(*) FROM messages m
                     WHERE m.room_id = rm.room_id AND m.author_id = rm.user_id
                       AND NOT m.is_deleted)
WHERE rm.room_id = :room_id AND rm.user_id = :author_id
"""

RECOUNT_DM_UNREAD = """
UPDATE direct_conversation_participants p
SET unread_count = (SELECT count(*) FROM messages m
                    WHERE m.conversation_id = p.conversation_id AND m.author_id <> p.user_id
                      AND NOT m.is_deleted
                      AND m.id > COALESCE(p.last_read_message_id, 0))
WHERE p.conversation_id = :conversation_id AND p.user_id <> :author_id
"""

TOUCH_AUTHOR = """
UPDATE users SET last_seen_at = GREATEST(last_seen_at, :created_at)
WHERE id = :author_id AND last_seen_at IS DISTINCT FROM GREATEST(last_seen_at, :created_at)
"""


def index_message(session, message_id: int) -> bool:
    """Apply the message's bookkeeping; False when the message is gone."""
    message = session.execute(
        text("SELECT room_id, conversation_id, author_id, created_at FROM messages "
             "WHERE id = :id"), {"id": message_id},
    ).mappings().first()
    if message is None:
        return False
    if message["room_id"] is not None:
        session.execute(text(RECOUNT_ROOM_MEMBER), dict(message))
    else:
        session.execute(text(RECOUNT_DM_UNREAD), dict(message))
    session.execute(text(TOUCH_AUTHOR), dict(message))
    return True


@shared_task(bind=True, base=VezaTask, name="messages.index")
def index(self: VezaTask, message_id: int) -> bool:
    with self.transaction() as session:
        return index_message(session, message_id)
