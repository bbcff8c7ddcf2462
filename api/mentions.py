"""The caller's mention feed: messages that mention them, newest first,
only those they may still see (a room they are in or a public one, within
its retention; a DM of theirs), never deleted ones."""

from __future__ import annotations

from flask import Blueprint, g
from sqlalchemy.orm import Session

from api.messages import page
from api.schemas import MessagePage, PageQuery
from api.spec import operation

bp = Blueprint("mentions", __name__)

# Over alias m (api/messages.py's MESSAGE_QUERY, which leaves out deleted
# messages): mentions of the viewer, found through idx_message_mentions_user,
# with the message's whole key so that only its partition is read.
MENTIONS_OF_THE_VIEWER = """
(m.id, m.created_at) IN (
    SELECT mm.message_id, mm.message_created_at FROM message_mentions mm
    WHERE mm.user_id = :viewer)
AND (
    EXISTS (
        SELECT 1 FROM direct_conversation_participants p
        WHERE p.conversation_id = m.conversation_id AND p.user_id = :viewer)
    OR EXISTS (
        SELECT 1 FROM rooms r
        WHERE r.id = m.room_id
          AND (r.is_public OR EXISTS (
                SELECT 1 FROM room_members rm
                WHERE rm.room_id = r.id AND rm.user_id = :viewer))
          AND (r.message_retention_days <= 0
               OR m.created_at >= now() - make_interval(days => r.message_retention_days))))
"""


@operation(
    bp,
    "GET",
    "/mentions",
    summary="Messages that mention you, newest first; ?before=<id> for older ones",
    query=PageQuery,
    responses={200: MessagePage},
)
def list_mentions(session: Session, query: PageQuery) -> MessagePage:
    return page(session, MENTIONS_OF_THE_VIEWER, {"viewer": g.user.id}, query)
