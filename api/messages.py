"""Messages in rooms (and the parts DMs share): post, list, edit, delete,
pin, react, read markers, unread counts and room statistics.

A post writes the message and an outbox row for `messages.index` in one
transaction; the mentions trigger fills message_mentions from
messages.mentions in that same transaction.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from flask import Blueprint, g, request
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session

from api import audit
from api.access import (
    MODERATOR_RANK,
    can_moderate_messages,
    check_conversation_open,
    forbidden,
    member_of,
    membership,
    muted_now,
    not_found,
    rank,
    visible_message,
    visible_room,
)
from api.errors import ApiError
from api.notifications import mark_read_through
from api.request_context import client_ip, request_id, user_agent
from api.schemas import (
    MAX_CONTENT_LENGTH,
    Author,
    MessageEdit,
    MessageIn,
    MessageOut,
    MessagePage,
    PageQuery,
    ReactionIn,
    ReadIn,
    RoomStatsOut,
    UnreadOut,
)
from api.spec import operation
from db.models import (
    AuditSeverity,
    DirectConversation,
    DirectConversationParticipant,
    Message,
    MessageContentType,
    Reaction,
    Room,
    RoomMember,
    User,
)
from veza import jobs, outbox
from veza.messages.reactions import NotAnEmoji, canonical_emoji
from veza.messages.sanitize import sanitize_html
from veza.messages.visibility import MODERATION_VISIBLE
from veza.settings import get_settings

bp = Blueprint("messages", __name__)

MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_-]{3,50})")
# X-Veza-Client: a client's name and, after a slash, its version.
CLIENT = re.compile(r"(?P<name>[A-Za-z0-9._-]{1,50})(?:/(?P<version>[A-Za-z0-9.+_-]{1,30}))?")

# The seed's pagination query, keyed on (id, created_at) because messages is
# partitioned, with the viewer's own reactions flagged; a message held or
# rejected by moderation only for its author and the room's moderators.
MESSAGE_QUERY = f"""
SELECT m.id, m.uuid, m.room_id, m.conversation_id, m.content, m.content_type::text,
       m.raw_content, m.parent_message_id, m.thread_count, m.is_thread_root, m.is_edited,
       m.edit_count, m.edited_at, m.is_deleted, m.is_pinned, m.mentions,
       m.referenced_message_ids, m.reaction_count, m.is_flagged, m.flag_count,
       m.moderation_status::text, m.moderation_reason, m.metadata, m.created_at,
       m.updated_at, m.rendered_html,
       CASE WHEN m.enriched_at IS NULL THEN 'pending' ELSE 'done' END AS enrichment,
       json_build_object('id', u.id, 'username', u.username, 'display_name', u.display_name,
                         'avatar_url', u.avatar_url) AS author,
       COALESCE((
           SELECT json_object_agg(r.emoji, json_build_object(
                      'count', r.reaction_count, 'users', r.user_list,
                      'has_user_reacted', r.has_user_reacted))
           FROM (SELECT rr.emoji, COUNT(*) AS reaction_count,
                        json_agg(json_build_object('user_id', ru.id, 'username', ru.username)
                                 ORDER BY rr.id) AS user_list,
                        bool_or(rr.user_id = :viewer) AS has_user_reacted
                 FROM reactions rr JOIN users ru ON ru.id = rr.user_id
                 WHERE rr.message_id = m.id AND rr.message_created_at = m.created_at
                 GROUP BY rr.emoji) r
       ), '{{}}'::json) AS reactions
FROM messages m
JOIN users u ON u.id = m.author_id
WHERE NOT m.is_deleted AND {MODERATION_VISIBLE} AND {{where}}
ORDER BY m.id DESC
LIMIT :limit
"""


def fetch_messages(
    session: Session,
    where: str,
    params: dict[str, Any],
    *,
    limit: int = 1,
    retention_days: int = 0,
) -> list[MessageOut]:
    """Run MESSAGE_QUERY with `where` (SQL over alias m); messages older
    than the room's retention are hidden even before maintenance purges them."""
    if retention_days > 0:
        where += " AND m.created_at >= now() - make_interval(days => :retention_days)"
        params = params | {"retention_days": retention_days}
    rows = session.execute(
        text(MESSAGE_QUERY.replace("{where}", where)),
        params | {"viewer": g.user.id, "limit": limit},
    ).mappings()
    return [MessageOut.model_validate(dict(row)) for row in rows]


def message_out(session: Session, message_id: int, room: Room | None = None) -> MessageOut:
    found = fetch_messages(
        session,
        "m.id = :id",
        {"id": message_id},
        retention_days=room.message_retention_days if room else 0,
    )
    if not found:
        raise not_found()
    return found[0]


def page(
    session: Session, where: str, params: dict[str, Any], query: PageQuery, retention_days: int = 0
) -> MessagePage:
    if query.before is not None:
        where += " AND m.id < :before"
        params = params | {"before": query.before}
    # One row more than asked says whether an older page exists.
    messages = fetch_messages(
        session, where, params, limit=query.limit + 1, retention_days=retention_days
    )
    more = len(messages) > query.limit
    messages = messages[: query.limit]
    return MessagePage(messages=messages, next_before=messages[-1].id if more else None)


def mentioned_user_ids(
    session: Session,
    content: str,
    *,
    room: Room | None = None,
    conversation_id: int | None = None,
) -> list[int]:
    """Ids of the existing users named as @username in the content who can
    see where it is posted: anyone for a public room, the members of a
    private one, the participants of a DM. A mention of anyone else would
    notify them of a message they cannot read."""
    names = set(MENTION.findall(content))
    if not names:
        return []
    named = select(User.id).where(User.username.in_(names), User.deleted_at.is_(None))
    if conversation_id is not None:
        named = named.where(
            User.id.in_(
                select(DirectConversationParticipant.user_id).where(
                    DirectConversationParticipant.conversation_id == conversation_id
                )
            )
        )
    elif room is not None and not room.is_public:
        named = named.where(
            User.id.in_(select(RoomMember.user_id).where(RoomMember.room_id == room.id))
        )
    return sorted(session.scalars(named))


def client_metadata() -> dict[str, str]:
    """metadata.client and metadata.version from `X-Veza-Client: name/version`
    (a version alone is optional); a header that does not read so is left
    out rather than refusing the message."""
    found = CLIENT.fullmatch(request.headers.get("X-Veza-Client", "").strip())
    if found is None:
        return {}
    name, version = found.group("name"), found.group("version")
    return {"client": name, **({"version": version} if version else {})}


def parent_reference(
    session: Session,
    parent_id: int | None,
    *,
    room_id: int | None = None,
    conversation_id: int | None = None,
) -> datetime | None:
    """The parent's created_at (half of its key), or 404 when the parent is
    not a live message of the same room or conversation."""
    if parent_id is None:
        return None
    created_at = session.scalar(
        select(Message.created_at).where(
            Message.id == parent_id,
            Message.is_deleted.is_(False),
            Message.room_id == room_id if room_id else Message.conversation_id == conversation_id,
        )
    )
    if created_at is None:
        raise not_found()
    return created_at


def create_message(
    session: Session,
    body: MessageIn,
    *,
    room: Room | None = None,
    conversation: DirectConversation | None = None,
) -> MessageOut:
    """Insert a message and owe its indexing task, in the caller's transaction."""
    room_id = room.id if room else None
    conversation_id = conversation.id if conversation else None
    content = stored_content(body.content_type, body.content)
    # INSERT ... RETURNING the whole row: one round trip, and the answer is
    # built from it (a new message has no reactions to aggregate yet).
    message = session.scalars(
        insert(Message).returning(Message),
        [
            {
                "room_id": room_id,
                "conversation_id": conversation_id,
                "author_id": g.user.id,
                "content": content,
                "raw_content": body.content,
                "content_type": MessageContentType(body.content_type),
                "parent_message_id": body.parent_message_id,
                "parent_created_at": parent_reference(
                    session,
                    body.parent_message_id,
                    room_id=room_id,
                    conversation_id=conversation_id,
                ),
                "mentions": mentioned_user_ids(
                    session, content, room=room, conversation_id=conversation_id
                ),
                "meta": client_metadata(),
                "ip_address": client_ip(),
                "user_agent": user_agent(),
            }
        ],
    ).one()  # a month without a partition fails here (see api.spec)
    outbox.enqueue(session, jobs.INDEX_MESSAGE, message.id, request_id=request_id())
    return new_message_out(message)


def stored_content(content_type: str, content: str) -> str:
    """What is stored (and served) as `content`: HTML sanitised
    (veza/messages/sanitize.py), anything else as sent. raw_content keeps
    what was sent. What the sanitiser leaves must still be a message."""
    if content_type != MessageContentType.html.value:
        return content
    clean = sanitize_html(content)
    if not clean.strip():
        problem = "has no content left once sanitised"
    elif len(clean) > MAX_CONTENT_LENGTH:
        problem = f"is over {MAX_CONTENT_LENGTH} characters once sanitised"
    else:
        return clean
    raise ApiError(422, "validation_failed", "The body is not valid.", {"content": problem})


def new_message_out(message: Message) -> MessageOut:
    fields = {
        name: getattr(message, name)
        for name in MessageOut.model_fields
        if name
        not in (
            "author",
            "reactions",
            "content_type",
            "moderation_status",
            "metadata",
            "enrichment",
        )
    }
    author = Author(
        id=g.user.id,
        username=g.user.username,
        display_name=g.user.display_name,
        avatar_url=g.user.avatar_url,
    )
    return MessageOut(
        **fields,
        author=author,
        reactions={},
        metadata=message.meta,
        content_type=message.content_type.value,
        moderation_status=message.moderation_status.value,
        enrichment="pending",
    )


def check_not_silenced(room: Room, member: RoomMember) -> None:
    """Archived rooms and muted members (until muted_until) write nothing:
    no post, edit, reaction or upload."""
    if room.is_archived:
        raise ApiError(409, "room_archived", "The room is archived.")
    if muted_now(member):
        raise forbidden("You are muted in this room.")


def check_can_post(session: Session, room: Room, member: RoomMember) -> None:
    check_not_silenced(room, member)
    # Moderators and up keep talking in slow mode (they run the room).
    if room.slow_mode_seconds and rank(room, member) < MODERATOR_RANK:
        enforce_slow_mode(session, room, member)


def enforce_slow_mode(session: Session, room: Room, member: RoomMember) -> None:
    """429 with Retry-After while the member's last message is younger than
    slow_mode_seconds. The membership row is locked first, so that two
    concurrent posts by one member cannot both slip through."""
    membership(session, room.id, member.user_id, lock=True)
    elapsed = session.scalar(
        select(func.extract("epoch", func.now() - func.max(Message.created_at))).where(
            Message.room_id == room.id, Message.author_id == member.user_id
        )
    )
    if elapsed is not None and float(elapsed) < room.slow_mode_seconds:
        wait = max(1, math.ceil(room.slow_mode_seconds - float(elapsed)))
        raise ApiError(
            429,
            "slow_mode",
            f"Slow mode: wait {wait}s before posting again.",
            {"retry_after": wait},
            headers={"Retry-After": str(wait)},
        )


# ------------------------------------------------------------------ routes


@operation(
    bp,
    "POST",
    "/rooms/<id:room_id>/messages",
    summary="Post a message",
    body=MessageIn,
    responses={201: MessageOut},
    errors=(403, 409, 429),
)
def post_room_message(session: Session, room_id: int, body: MessageIn) -> tuple[MessageOut, int]:
    room, member = member_of(session, room_id, g.user)
    check_can_post(session, room, member)
    return create_message(session, body, room=room), 201


@operation(
    bp,
    "GET",
    "/rooms/<id:room_id>/messages",
    summary="Messages, newest first; ?before=<id> for older ones",
    query=PageQuery,
    responses={200: MessagePage},
)
def list_room_messages(session: Session, room_id: int, query: PageQuery) -> MessagePage:
    room, _ = visible_room(session, room_id, g.user)
    return page(
        session, "m.room_id = :room_id", {"room_id": room.id}, query, room.message_retention_days
    )


@operation(
    bp,
    "PATCH",
    "/messages/<id:message_id>",
    summary="Edit your message",
    body=MessageEdit,
    responses={200: MessageOut},
    errors=(403, 409),
)
def edit_message(session: Session, message_id: int, body: MessageEdit) -> MessageOut:
    message, room = writable_message(session, message_id)
    if message.author_id != g.user.id:
        raise forbidden("Only the author may edit a message.")
    message.content = stored_content(message.content_type.value, body.content)
    message.raw_content = body.content
    message.mentions = mentioned_user_ids(
        session, message.content, room=room, conversation_id=message.conversation_id
    )
    message.is_edited = True
    message.edit_count += 1
    message.edited_at = message.updated_at = func.now()
    # The new content's enrichment is owed: pending until messages.index runs.
    message.rendered_html = message.enriched_at = None
    session.flush()
    outbox.enqueue(session, jobs.INDEX_MESSAGE, message.id, request_id=request_id())
    return message_out(session, message.id, room)


@operation(
    bp,
    "DELETE",
    "/messages/<id:message_id>",
    summary="Delete a message (author, or a room moderator)",
    responses={204: None},
    errors=(403,),
)
def delete_message(session: Session, message_id: int) -> tuple[None, int]:
    message, room, member = visible_message(session, message_id, g.user, lock=True)
    by_author = message.author_id == g.user.id
    if not by_author and not (room is not None and can_moderate_messages(room, member)):
        raise forbidden("Only the author or a moderator may delete this message.")
    message.is_deleted = True
    message.deleted_at = message.updated_at = func.now()
    if room is not None and not by_author:
        audit.record(
            session,
            "message_deleted_by_moderator",
            {"message_id": message.id, "author_id": message.author_id},
            user_id=g.user.id,
            room_id=room.id,
            resource=("message", message.id),
            severity=AuditSeverity.warning,
        )
    # The author's message count changed: the same idempotent recount.
    outbox.enqueue(session, jobs.INDEX_MESSAGE, message.id, request_id=request_id())
    return None, 204


def set_pinned(session: Session, message_id: int, pinned: bool) -> MessageOut:
    message, room, member = visible_message(session, message_id, g.user, lock=True)
    if room is not None and not can_moderate_messages(room, member):
        raise forbidden("Only moderators may pin messages.")
    message.is_pinned = pinned
    session.flush()
    return message_out(session, message.id, room)


@operation(
    bp,
    "POST",
    "/messages/<id:message_id>/pin",
    summary="Pin a message",
    responses={200: MessageOut},
    errors=(403,),
)
def pin_message(session: Session, message_id: int) -> MessageOut:
    return set_pinned(session, message_id, True)


@operation(
    bp,
    "DELETE",
    "/messages/<id:message_id>/pin",
    summary="Unpin a message",
    responses={200: MessageOut},
    errors=(403,),
)
def unpin_message(session: Session, message_id: int) -> MessageOut:
    return set_pinned(session, message_id, False)


def writable_message(session: Session, message_id: int) -> tuple[Message, Room | None]:
    """A message the user may still write to: edit, react, unreact. In a
    room that takes membership (a user who left, or was kicked and banned,
    writes nothing there), no mute in force and a room not archived; in a
    DM, a conversation not blocked."""
    message, room, member = visible_message(session, message_id, g.user, lock=True)
    if room is None:
        assert message.conversation_id is not None
        # Loaded by visible_message already: get() answers from the session.
        check_conversation_open(session.get_one(DirectConversation, message.conversation_id))
        return message, None
    if member is None:
        raise forbidden("Join the room first.")
    check_not_silenced(room, member)
    return message, room


def check_reaction_cap(session: Session, message: Message) -> None:
    """MAX_REACTIONS_PER_USER_PER_MESSAGE distinct reactions per user and
    message. The message row is locked (writable_message), so concurrent
    reactions to it count one after the other."""
    limit = get_settings().max_reactions_per_user_per_message
    mine = session.scalar(
        select(func.count())
        .select_from(Reaction)
        .where(
            Reaction.message_id == message.id,
            Reaction.message_created_at == message.created_at,
            Reaction.user_id == g.user.id,
        )
    )
    if mine is not None and mine >= limit:
        raise ApiError(
            409,
            "reaction_limit",
            f"At most {limit} reactions per message; remove one first.",
            {"limit": limit},
        )


@operation(
    bp,
    "POST",
    "/messages/<id:message_id>/reactions",
    summary="React to a message",
    body=ReactionIn,
    responses={201: MessageOut},
    errors=(403, 409),
)
def add_reaction(session: Session, message_id: int, body: ReactionIn) -> tuple[MessageOut, int]:
    message, room = writable_message(session, message_id)
    check_reaction_cap(session, message)
    inserted = session.execute(
        text(
            "INSERT INTO reactions (message_id, message_created_at, user_id, emoji) "
            "VALUES (:id, :created_at, :user, :emoji) ON CONFLICT DO NOTHING RETURNING id"
        ),
        {
            "id": message.id,
            "created_at": message.created_at,
            "user": g.user.id,
            "emoji": body.emoji,
        },
    ).first()
    if inserted is None:
        raise ApiError(409, "already_reacted", "You already reacted with this emoji.")
    # messages.reaction_count is kept by a trigger (migration 0004).
    return message_out(session, message.id, room), 201


@operation(
    bp,
    "DELETE",
    "/messages/<id:message_id>/reactions/<emoji>",
    summary="Remove your reaction",
    responses={204: None},
    errors=(403,),
)
def remove_reaction(session: Session, message_id: int, emoji: str) -> tuple[None, int]:
    message, _ = writable_message(session, message_id)
    reaction = session.scalar(
        select(Reaction).where(
            Reaction.message_id == message.id,
            Reaction.message_created_at == message.created_at,
            Reaction.user_id == g.user.id,
            Reaction.emoji == stored_emoji(emoji),
        )
    )
    if reaction is None:
        raise not_found()
    session.delete(reaction)
    return None, 204


def stored_emoji(emoji: str) -> str:
    """The form a reaction named in a path is stored in: :+1: and 👍 are the
    same reaction. A reaction stored before emoji were validated is named
    as it was stored."""
    try:
        return canonical_emoji(emoji)
    except NotAnEmoji:
        return emoji


# ------------------------------------------------------- reading and stats


def unread(session: Session, room_id: int) -> UnreadOut:
    count = session.execute(select(func.calculate_unread_count(g.user.id, room_id))).scalar_one()
    return UnreadOut(room_id=room_id, unread_count=count)


@operation(
    bp,
    "POST",
    "/rooms/<id:room_id>/read",
    summary="Mark messages read up to one",
    body=ReadIn,
    responses={200: UnreadOut},
    errors=(403,),
)
def mark_read(session: Session, room_id: int, body: ReadIn) -> UnreadOut:
    room, member = member_of(session, room_id, g.user)
    in_room = session.scalar(
        select(Message.id).where(Message.id == body.message_id, Message.room_id == room.id)
    )
    if in_room is None:
        raise not_found()
    # Only forward: an older marker arriving late must not resurrect unreads.
    session.execute(
        update(RoomMember)
        .where(RoomMember.id == member.id)
        .values(
            last_read_message_id=func.greatest(
                func.coalesce(RoomMember.last_read_message_id, 0), body.message_id
            )
        )
    )
    mark_read_through(session, body.message_id, room_id=room.id)
    return unread(session, room.id)


@operation(
    bp,
    "GET",
    "/rooms/<id:room_id>/unread",
    summary="Your unread count",
    responses={200: UnreadOut},
    errors=(403,),
)
def unread_count(session: Session, room_id: int) -> UnreadOut:
    room, _ = member_of(session, room_id, g.user)
    return unread(session, room.id)


@operation(
    bp,
    "GET",
    "/rooms/<id:room_id>/stats",
    summary="Room statistics, as refreshed by maintenance.refresh_room_stats",
    responses={200: RoomStatsOut},
)
def room_stats(session: Session, room_id: int) -> RoomStatsOut:
    # The rollup, which the maintenance task keeps fresh and the seed's
    # room_stats view reads too (migration 0012; docs/maintenance.md).
    room, _ = visible_room(session, room_id, g.user)
    row = (
        session.execute(
            text(
                "SELECT room_id, member_count, total_messages, messages_24h, messages_7d,"
                " active_users_24h, last_message_at, reactions_24h"
                " FROM room_stats_rollup WHERE room_id = :id"
            ),
            {"id": room.id},
        )
        .mappings()
        .first()
    )
    if row is None:  # created or unarchived since the last refresh
        # The exact counters the triggers keep are at hand; the windowed
        # figures wait for the first refresh.
        return RoomStatsOut(
            room_id=room.id,
            member_count=room.member_count,
            total_messages=room.message_count,
            messages_24h=0,
            messages_7d=0,
            active_users_24h=0,
            last_message_at=None,
            reactions_24h=0,
        )
    return RoomStatsOut.model_validate(dict(row))
