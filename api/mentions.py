"""The caller's mention feed: messages that mention them, newest first,
only those they may still see (a room they are in or a public one, within
its retention; a DM of theirs), never deleted ones."""

from __future__ import annotations

from flask import Blueprint, g
from sqlalchemy.orm import Session

from api.messages import page
from api.schemas import MessagePage, PageQuery
from api.spec import operation
from veza.messages.visibility import VISIBLE_TO_VIEWER

bp = Blueprint("mentions", __name__)

# Over alias m (api/messages.py's MESSAGE_QUERY, which leaves out deleted
# messages): mentions of the viewer, found through idx_message_mentions_user,
# with the message's whole key so that only its partition is read.
MENTIONS_OF_THE_VIEWER = f"""
(m.id, m.created_at) IN (
    SELECT mm.message_id, mm.message_created_at FROM message_mentions mm
    WHERE mm.user_id = :viewer)
AND {VISIBLE_TO_VIEWER}
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
