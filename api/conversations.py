"""Direct messages between two users: find-or-create, post, read, the
inbox of one's DMs with their unread counts, and read markers.

A conversation is the ordered pair of its participants (participant_ids
[low, high], unique), so "find or create" is an upsert on that pair and
two users racing to open the same DM get the same conversation.
"""

from __future__ import annotations

from flask import Blueprint, g
from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.access import check_conversation_open, not_found, participant_conversation, usable_user
from api.errors import ApiError
from api.messages import create_message, page
from api.notifications import mark_read_through
from api.paging import cursor_after, cursor_position
from api.rooms import user_ref
from api.schemas import (
    ActivityPageQuery,
    ConversationIn,
    ConversationOut,
    ConversationPage,
    ConversationUnreadOut,
    InboxConversation,
    MessageIn,
    MessageOut,
    MessagePage,
    PageQuery,
    ReadIn,
)
from api.spec import operation
from db.models import DirectConversation, DirectConversationParticipant, Message, User
from veza.messages.counters import DM_UNREAD

bp = Blueprint("conversations", __name__)


def conversation_out(session: Session, conversation: DirectConversation) -> ConversationOut:
    users = session.scalars(
        select(User).where(User.id.in_(conversation.participant_ids)).order_by(User.id)
    ).all()
    fields = {
        name: getattr(conversation, name)
        for name in ConversationOut.model_fields
        if name != "participants"
    }
    return ConversationOut(**fields, participants=[user_ref(u) for u in users])


@operation(
    bp,
    "POST",
    "/conversations",
    summary="Find or create the DM with a user",
    body=ConversationIn,
    responses={200: ConversationOut, 201: ConversationOut},
)
def open_conversation(session: Session, body: ConversationIn) -> tuple[ConversationOut, int]:
    if body.user_id == g.user.id:
        raise ApiError(
            422,
            "validation_failed",
            "The body is not valid.",
            {"user_id": "cannot open a conversation with yourself"},
        )
    other = usable_user(session, body.user_id)
    pair = sorted((g.user.id, other.id))
    created_id = session.scalar(
        insert(DirectConversation)
        .values(participant_ids=pair)
        .on_conflict_do_nothing()
        .returning(DirectConversation.id)
    )
    if created_id is not None:
        session.add_all(
            [DirectConversationParticipant(conversation_id=created_id, user_id=uid) for uid in pair]
        )
        session.flush()
    conversation = session.scalars(
        select(DirectConversation).where(DirectConversation.participant_ids == pair)
    ).one()
    return conversation_out(session, conversation), 201 if created_id is not None else 200


@operation(
    bp,
    "POST",
    "/conversations/<id:conversation_id>/messages",
    summary="Send a direct message",
    body=MessageIn,
    responses={201: MessageOut},
    errors=(403,),
)
def post_direct_message(
    session: Session, conversation_id: int, body: MessageIn
) -> tuple[MessageOut, int]:
    conversation = participant_conversation(session, conversation_id, g.user)
    check_conversation_open(conversation)
    return create_message(session, body, conversation=conversation), 201


@operation(
    bp,
    "GET",
    "/conversations/<id:conversation_id>/messages",
    summary="Direct messages, newest first; ?before=<id> for older ones",
    query=PageQuery,
    responses={200: MessagePage},
)
def list_direct_messages(session: Session, conversation_id: int, query: PageQuery) -> MessagePage:
    conversation = participant_conversation(session, conversation_id, g.user)
    return page(
        session, "m.conversation_id = :conversation_id", {"conversation_id": conversation.id}, query
    )


# A DM by last activity (one nobody has written in yet: by its creation).
CONVERSATION_ACTIVITY = func.coalesce(
    DirectConversation.last_activity_at, DirectConversation.created_at
)
# The caller's unread count, recounted from its definition (the one
# messages.index and the daily recount keep: veza/messages/counters.py).
RECOUNT_MY_UNREAD = DM_UNREAD.fix("p.conversation_id = :conversation_id AND p.user_id = :user_id")


@operation(
    bp,
    "GET",
    "/conversations",
    summary="Your DMs with your unread counts, most recently active first",
    query=ActivityPageQuery,
    responses={200: ConversationPage},
)
def list_conversations(session: Session, query: ActivityPageQuery) -> ConversationPage:
    listed = (
        select(DirectConversation, DirectConversationParticipant, CONVERSATION_ACTIVITY)
        .join(
            DirectConversationParticipant,
            DirectConversationParticipant.conversation_id == DirectConversation.id,
        )
        .where(DirectConversationParticipant.user_id == g.user.id)
    )
    if query.cursor is not None:
        position = cursor_position(query.cursor)
        listed = listed.where(
            tuple_(CONVERSATION_ACTIVITY, DirectConversation.id) < tuple_(*position)
        )
    found = session.execute(
        listed.order_by(CONVERSATION_ACTIVITY.desc(), DirectConversation.id.desc()).limit(
            query.limit + 1
        )
    ).all()
    rows = found[: query.limit]
    # Every participant in one query; conversation_out finds them in the session.
    everyone = {uid for conversation, _, _ in rows for uid in conversation.participant_ids}
    session.scalars(select(User).where(User.id.in_(everyone))).all()
    last = rows[-1] if len(found) > query.limit else None
    return ConversationPage(
        conversations=[
            InboxConversation(
                **conversation_out(session, conversation).model_dump(),
                unread_count=mine.unread_count,
                last_read_message_id=mine.last_read_message_id,
            )
            for conversation, mine, _ in rows
        ],
        next_cursor=cursor_after(last[2], last[0].id) if last else None,
    )


@operation(
    bp,
    "POST",
    "/conversations/<id:conversation_id>/read",
    summary="Mark a DM read up to one message",
    body=ReadIn,
    responses={200: ConversationUnreadOut},
)
def mark_conversation_read(
    session: Session, conversation_id: int, body: ReadIn
) -> ConversationUnreadOut:
    """Only forward: an older marker arriving late must not bring unread
    messages back. The unread count is recounted here, in the request's
    transaction, so the answer and the inbox say the same at once."""
    conversation = participant_conversation(session, conversation_id, g.user)
    in_conversation = session.scalar(
        select(Message.id).where(
            Message.id == body.message_id, Message.conversation_id == conversation.id
        )
    )
    if in_conversation is None:
        raise not_found()
    mine = (DirectConversationParticipant.conversation_id == conversation.id) & (
        DirectConversationParticipant.user_id == g.user.id
    )
    session.execute(
        update(DirectConversationParticipant)
        .where(mine)
        .values(
            last_read_message_id=func.greatest(
                func.coalesce(DirectConversationParticipant.last_read_message_id, 0),
                body.message_id,
            )
        )
    )
    mark_read_through(session, body.message_id, conversation_id=conversation.id)
    params = {"conversation_id": conversation.id, "user_id": g.user.id}
    session.execute(text(RECOUNT_MY_UNREAD), params)
    unread = session.scalar(select(DirectConversationParticipant.unread_count).where(mine))
    return ConversationUnreadOut(conversation_id=conversation.id, unread_count=unread or 0)
