"""Who a message notifies: a `notifications` row for each person it
concerns, written after commit by messages.index (tasks/messages.py).

- In a room, a member hears of a message by their `notification_level`:
  'all' every message, 'mentions' a mention of them or a reply to their
  message, 'none' nothing. Only members who were in the room when it was
  posted, and who have not read past it already: a re-run after an edit,
  or late after an outage, does not tell a newcomer about old talk. A user
  mentioned in a public room they have not joined is not notified (the
  mention feed, GET /mentions, still shows it): the room is not theirs.
- In a DM, every other active participant, unless their level is 'none' or
  the conversation is blocked: a DM is addressed to them.
- Never the author, nor a deactivated or deleted user.
- Nobody for a message held or rejected by moderation
  (veza/messages/moderation.py runs before, in messages.index); approving
  it owes messages.index again, which notifies then.

A transaction takes FANOUT_BATCH recipients at most: the messages of a
batch (messages.index_batch) share one while they fit, and a room's members
are taken in user id order, so a 10,000-member room is a few short
transactions, not one long one holding its snapshot and WAL while the whole
room is written, and fifty chat messages are one, not fifty.

Running it twice writes nothing new: a row is unique per recipient and
message, and a conflict only ever raises the kind (an edit that adds a
mention turns 'message' into 'mention'), so a re-run after a retry, a
re-drive or an edit duplicates nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.engine import affected
from veza.messages.visibility import HELD

# Recipients per transaction: an insert of this many rows takes tens of
# milliseconds, and a room of the seed's largest size (max_members 10,000)
# takes two.
FANOUT_BATCH = 5000

Transaction = Callable[[], AbstractContextManager[Session]]

MESSAGE = f"""
SELECT m.id, m.created_at, m.room_id, m.conversation_id, m.author_id,
       COALESCE(m.mentions, '{{}}') AS mentions,
       (SELECT p.author_id FROM messages p
        WHERE p.id = m.parent_message_id AND p.created_at = m.parent_created_at)
           AS parent_author_id
FROM messages m WHERE m.id = ANY(:ids) AND NOT m.is_deleted AND NOT {HELD}
ORDER BY m.id
"""

# Where a conflict meets an existing row: only a stronger reason rewrites it.
KEEP_THE_STRONGER_KIND = """
ON CONFLICT (user_id, message_id) DO UPDATE SET kind = EXCLUDED.kind
WHERE notifications.kind < EXCLUDED.kind
"""

# One batch of a room's members after :after, and what they are owed. The
# batch's last user id is where the next one starts; a batch short of :size
# was the last.
ROOM_BATCH = f"""
WITH batch AS (
    SELECT rm.user_id,
           CASE WHEN rm.user_id = ANY(:mentions) THEN 'mention'
                WHEN rm.user_id = :parent_author_id THEN 'reply'
                ELSE 'message' END::notification_kind AS kind,
           rm.notification_level
    FROM room_members rm JOIN users u ON u.id = rm.user_id
    WHERE rm.room_id = :room_id AND rm.user_id > :after
      AND rm.user_id <> :author_id AND rm.joined_at <= :created_at
      AND COALESCE(rm.last_read_message_id, 0) < :id
      AND u.is_active AND u.deleted_at IS NULL
    ORDER BY rm.user_id
    LIMIT :size
), written AS (
    INSERT INTO notifications (user_id, kind, message_id, message_created_at, room_id)
    SELECT user_id, kind, :id, :created_at, :room_id FROM batch
    WHERE notification_level = 'all'
       OR (notification_level = 'mentions' AND kind > 'message')
    {KEEP_THE_STRONGER_KIND}
    RETURNING 1
)
SELECT (SELECT max(user_id) FROM batch), (SELECT count(*) FROM batch),
       (SELECT count(*) FROM written)
"""

DM_RECIPIENTS = f"""
INSERT INTO notifications (user_id, kind, message_id, message_created_at, conversation_id)
SELECT p.user_id, 'dm', :id, :created_at, :conversation_id
FROM direct_conversation_participants p
JOIN direct_conversations c ON c.id = p.conversation_id
JOIN users u ON u.id = p.user_id
WHERE p.conversation_id = :conversation_id AND p.user_id <> :author_id
  AND p.is_active AND p.notification_level <> 'none' AND NOT c.is_blocked
  AND COALESCE(p.last_read_message_id, 0) < :id
  AND u.is_active AND u.deleted_at IS NULL
{KEEP_THE_STRONGER_KIND}
"""


def notify_recipients(message_ids: Sequence[int], transaction: Transaction) -> int:
    """Write these messages' notifications, in as few `transaction()`s as
    FANOUT_BATCH allows; returns how many rows were written or strengthened
    (none for a message that is gone)."""
    pending: deque[tuple[dict[str, Any], int]] | None = None
    written = 0
    while pending is None or pending:
        with transaction() as session:
            if pending is None:
                found = session.execute(text(MESSAGE), {"ids": list(message_ids)}).mappings()
                pending = deque((dict(message), 0) for message in found)
            written += _notify_some(session, pending)
    return written


def _notify_some(session: Session, pending: deque[tuple[dict[str, Any], int]]) -> int:
    """Notify from the head of `pending` (each message, and the room member
    id after which its recipients are still owed) until FANOUT_BATCH
    recipients are done; a room left half done goes back at the head."""
    written, budget = 0, FANOUT_BATCH
    while pending and budget > 0:
        message, after = pending.popleft()
        if message["conversation_id"] is not None:
            count = affected(session.execute(text(DM_RECIPIENTS), message))
            written, budget = written + count, budget - max(count, 1)
            continue
        last, taken, count = session.execute(
            text(ROOM_BATCH), message | {"after": after, "size": budget}
        ).one()
        written, budget = written + count, budget - max(taken, 1)
        if taken and budget == 0:  # it filled the batch: more members may follow
            pending.appendleft((message, last))
    return written
