"""Who may see and do what in a room or conversation.

Anything a user may not see answers 404, with a body byte for byte that of
an id that does not exist (whatever the kind of thing: room, message,
conversation, member, user, file), so ids cannot be probed; 403 is kept
for things the user can see but not do (a member editing someone else's
message).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import NOT_FOUND_CODE, NOT_FOUND_MESSAGE, ApiError
from db.models import DirectConversation, Message, Room, RoomBan, RoomMember, RoomMemberRole, User
from veza.messages.moderation import HELD_STATUSES

# Ranks order who may act on whom: nobody acts on an equal or higher rank.
RANK = {RoomMemberRole.member: 0, RoomMemberRole.moderator: 1, RoomMemberRole.admin: 2}
OWNER_RANK = 3
MODERATOR_RANK = RANK[RoomMemberRole.moderator]
ADMIN_RANK = RANK[RoomMemberRole.admin]


def not_found() -> ApiError:
    """The one answer for anything unknown or hidden: it names nothing."""
    return ApiError(404, NOT_FOUND_CODE, NOT_FOUND_MESSAGE)


def is_usable(user: User) -> bool:
    """An account that may log in and be found: active and not deleted."""
    return user.is_active and user.deleted_at is None


def usable_user(session: Session, user_id: int) -> User:
    """The user, or the one 404 when the id is unknown or the account is
    deactivated or deleted: an account that is gone is gone from every
    lookup by id (a profile, an invitation, a DM)."""
    user = session.get(User, user_id)
    if user is None or not is_usable(user):
        raise not_found()
    return user


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def rank(room: Room, member: RoomMember | None) -> int:
    if member is None:
        return -1
    if member.user_id == room.owner_id:
        return OWNER_RANK
    return RANK[member.role]


def managing_rank(room: Room, member: RoomMember | None) -> int:
    """The rank a member acts with, and is protected with, in moderation:
    can_manage_members makes a plain member a moderator for it, so they
    mute and kick plain members only, and only those above a moderator
    act on them."""
    if member is not None and member.can_manage_members:
        return max(rank(room, member), MODERATOR_RANK)
    return rank(room, member)


def check_outranks(room: Room, me: RoomMember, target: RoomMember, refusal: str) -> None:
    """Nobody acts on an equal or higher rank (nor so on themselves)."""
    if managing_rank(room, me) <= managing_rank(room, target):
        raise forbidden(refusal)


def active_ban(session: Session, room_id: int, user_id: int) -> RoomBan | None:
    """The user's ban from the room, while it lasts (an expired row is inert)."""
    return session.scalar(
        select(RoomBan).where(
            RoomBan.room_id == room_id,
            RoomBan.user_id == user_id,
            RoomBan.banned_until > func.now(),
        )
    )


def membership(
    session: Session, room_id: int, user_id: int, *, lock: bool = False
) -> RoomMember | None:
    query = select(RoomMember).where(RoomMember.room_id == room_id, RoomMember.user_id == user_id)
    return session.scalar(query.with_for_update() if lock else query)


def visible_room(
    session: Session, room_id: int, user: User, *, lock: bool = False
) -> tuple[Room, RoomMember | None]:
    """The room and the user's membership (one query); 404 for a private
    room the user is not in. lock=True locks the room row."""
    query = (
        select(Room, RoomMember)
        .outerjoin(RoomMember, (RoomMember.room_id == Room.id) & (RoomMember.user_id == user.id))
        .where(Room.id == room_id)
    )
    found = session.execute(query.with_for_update(of=Room) if lock else query).first()
    if found is None:
        raise not_found()
    room: Room = found[0]
    member: RoomMember | None = found[1]  # an outer join: None when the user is not in the room
    if member is None and not room.is_public:
        raise not_found()
    return room, member


def member_of(session: Session, room_id: int, user: User) -> tuple[Room, RoomMember]:
    """The room and the user's membership, which the action requires."""
    room, member = visible_room(session, room_id, user)
    if member is None:
        raise forbidden("Join the room first.")
    return room, member


def participant_conversation(
    session: Session, conversation_id: int, user: User
) -> DirectConversation:
    conversation = session.get(DirectConversation, conversation_id)
    if conversation is None or user.id not in conversation.participant_ids:
        raise not_found()
    return conversation


def check_conversation_open(conversation: DirectConversation) -> None:
    """A blocked conversation stays readable but takes no new writes."""
    if conversation.is_blocked:
        raise forbidden("This conversation is blocked.")


def visible_message(
    session: Session, message_id: int, user: User, *, lock: bool = False
) -> tuple[Message, Room | None, RoomMember | None]:
    """A live message the user may see, with its room and the user's
    membership (both None for a direct message)."""
    query = select(Message).where(Message.id == message_id, Message.is_deleted.is_(False))
    message = session.scalar(query.with_for_update() if lock else query)
    if message is None:
        raise not_found()
    if message.conversation_id is not None:
        participant_conversation(session, message.conversation_id, user)
        return message, None, None
    assert message.room_id is not None  # the table's CHECK: a room or a conversation, not both
    room, member = visible_room(session, message.room_id, user)
    if past_retention(room, message) or hidden_by_moderation(message, room, member, user):
        raise not_found()
    return message, room, member


def hidden_by_moderation(
    message: Message, room: Room, member: RoomMember | None, user: User
) -> bool:
    """Held or rejected: seen by its author and the room's moderators only
    (the same rule as veza/messages/visibility.py's MODERATION_VISIBLE)."""
    return (
        message.moderation_status in HELD_STATUSES
        and message.author_id != user.id
        and not can_moderate_messages(room, member)
    )


def past_retention(room: Room, message: Message) -> bool:
    """Older than the room keeps messages: hidden now, purged by maintenance."""
    if room.message_retention_days <= 0:
        return False
    cutoff = datetime.now(UTC) - timedelta(days=room.message_retention_days)
    return message.created_at < cutoff


def muted_now(member: RoomMember) -> bool:
    """Muted until muted_until, or until lifted when it is null."""
    return member.is_muted and (
        member.muted_until is None or member.muted_until > datetime.now(UTC)
    )


def can_moderate_messages(room: Room, member: RoomMember | None) -> bool:
    return rank(room, member) >= MODERATOR_RANK or bool(member and member.can_manage_messages)
