"""Direct messages between two users: find-or-create, post, read.

A conversation is the ordered pair of its participants (participant_ids
[low, high], unique), so "find or create" is an upsert on that pair and
two users racing to open the same DM get the same conversation.
"""

from __future__ import annotations

from flask import Blueprint, g
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.access import check_conversation_open, not_found, participant_conversation
from api.errors import ApiError
from api.messages import create_message, page
from api.rooms import user_ref
from api.schemas import (
    ConversationIn,
    ConversationOut,
    MessageIn,
    MessageOut,
    MessagePage,
    PageQuery,
)
from api.spec import operation
from db.models import DirectConversation, DirectConversationParticipant, User

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
    other = session.get(User, body.user_id)
    if other is None or other.deleted_at is not None or not other.is_active:
        raise not_found()
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
