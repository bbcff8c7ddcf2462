"""Rooms and their members: create, change settings, archive, join, invite,
leave, kick (a ban for a time), lift bans, roles and mutes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, g
from pydantic import BaseModel
from sqlalchemy import delete, exists, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api import audit
from api.access import (
    ADMIN_RANK,
    MODERATOR_RANK,
    RANK,
    active_ban,
    check_outranks,
    forbidden,
    managing_rank,
    member_of,
    membership,
    muted_now,
    not_found,
    rank,
    usable_user,
    visible_room,
)
from api.errors import ApiError
from api.paging import cursor_after, cursor_position
from api.schemas import (
    ActivityPageQuery,
    BanList,
    BanOut,
    JoinedMemberOut,
    KickQuery,
    MemberAdd,
    MemberOut,
    MemberPatch,
    RoomCreate,
    RoomMetadataIn,
    RoomOut,
    RoomPage,
    RoomPatch,
    UserRef,
)
from api.spec import operation
from db.models import AuditSeverity, Room, RoomBan, RoomMember, RoomMemberRole, RoomMute, User
from veza.settings import get_settings

bp = Blueprint("rooms", __name__)

# The only fields a client may clear by sending null; null for any other
# (is_public, max_members, a role...) is a 422.
NULLABLE_ROOM_FIELDS = {"description", "topic", "welcome_message", "rules"}
NULLABLE_MEMBER_FIELDS = {"muted_until"}


def user_ref(user: User) -> UserRef:
    return UserRef(id=user.id, username=user.username, display_name=user.display_name)


def room_out(session: Session, room: Room) -> RoomOut:
    owner = session.get_one(User, room.owner_id)
    fields = {
        name: getattr(room, name)
        for name in RoomOut.model_fields
        if name not in ("owner", "metadata")
    }
    return RoomOut(**fields, owner=user_ref(owner), metadata=room.meta)


def member_out(session: Session, room: Room, member: RoomMember) -> MemberOut:
    fields = {
        name: getattr(member, name)
        for name in MemberOut.model_fields
        if name not in ("user", "role", "is_owner")
    }
    return MemberOut(
        **fields,
        user=user_ref(session.get_one(User, member.user_id)),
        role=member.role.value,
        is_owner=member.user_id == room.owner_id,
    )


def reject_nulls(changes: dict[str, Any], nullable: set[str]) -> None:
    nulls = {
        name: "may not be null"
        for name, value in changes.items()
        if value is None and name not in nullable
    }
    if nulls:
        raise ApiError(422, "validation_failed", "The body is not valid.", nulls)


# ------------------------------------------------------------------- rooms


@operation(
    bp,
    "POST",
    "/rooms",
    summary="Create a room (you become its owner)",
    body=RoomCreate,
    responses={201: RoomOut},
)
def create_room(session: Session, body: RoomCreate) -> tuple[RoomOut, int]:
    settings = body.model_dump(exclude_unset=True)
    reject_nulls(settings, NULLABLE_ROOM_FIELDS)
    room = Room(owner_id=g.user.id, **settings)
    session.add(room)
    session.flush()
    session.add(
        RoomMember(
            room_id=room.id,
            user_id=g.user.id,
            role=RoomMemberRole.admin,
            can_invite=True,
            can_manage_messages=True,
            can_manage_members=True,
        )
    )
    session.flush()
    session.refresh(room)  # server defaults, and member_count as the trigger left it
    return room_out(session, room), 201


# Rooms by last activity (a room nobody has written in yet: by its
# creation), the order of idx_rooms_discovery (migration 0013).
ROOM_ACTIVITY = func.coalesce(Room.last_activity_at, Room.created_at)


@operation(
    bp,
    "GET",
    "/rooms",
    summary="Public rooms and yours, most recently active first",
    query=ActivityPageQuery,
    responses={200: RoomPage},
)
def list_rooms(session: Session, query: ActivityPageQuery) -> RoomPage:
    """Discovery: every public room, and the private ones the caller is in;
    archived rooms are not listed."""
    mine = exists().where(RoomMember.room_id == Room.id, RoomMember.user_id == g.user.id)
    listed = select(Room, ROOM_ACTIVITY).where(
        Room.is_archived.is_(False), or_(Room.is_public, mine)
    )
    if query.cursor is not None:
        listed = listed.where(
            tuple_(ROOM_ACTIVITY, Room.id) < tuple_(*cursor_position(query.cursor))
        )
    # One row more than asked says whether another page exists.
    found = session.execute(
        listed.order_by(ROOM_ACTIVITY.desc(), Room.id.desc()).limit(query.limit + 1)
    ).all()
    rows = found[: query.limit]
    # The owners in one query; room_out then finds them in the session.
    session.scalars(select(User).where(User.id.in_({room.owner_id for room, _ in rows}))).all()
    last = rows[-1] if len(found) > query.limit else None
    return RoomPage(
        rooms=[room_out(session, room) for room, _ in rows],
        next_cursor=cursor_after(last[1], last[0].id) if last else None,
    )


@operation(bp, "GET", "/rooms/<id:room_id>", summary="A room you can see", responses={200: RoomOut})
def get_room(session: Session, room_id: int) -> RoomOut:
    room, _ = visible_room(session, room_id, g.user)
    return room_out(session, room)


@operation(
    bp,
    "PATCH",
    "/rooms/<id:room_id>",
    summary="Change settings or archive (owner, admin)",
    body=RoomPatch,
    responses={200: RoomOut},
    errors=(403,),
)
def update_room(session: Session, room_id: int, body: RoomPatch) -> RoomOut:
    room, member = visible_room(session, room_id, g.user, lock=True)
    if rank(room, member) < ADMIN_RANK:
        raise forbidden("Only the owner or a room admin may change settings.")
    changes = body.model_dump(exclude_unset=True)
    reject_nulls(changes, NULLABLE_ROOM_FIELDS)
    if changes.pop("metadata", None) is not None:
        assert body.metadata is not None
        # The column's attribute is `meta` ("metadata" is the ORM's own).
        changes["meta"] = merged_metadata(room.meta, body.metadata)
    changed = {
        name: [getattr(room, name), value]
        for name, value in changes.items()
        if getattr(room, name) != value
    }
    for name, (_, value) in changed.items():
        setattr(room, name, value)
    if changed:
        room.updated_at = func.now()
        audit.record(
            session,
            "room_settings_changed",
            {"changes": changed},
            user_id=g.user.id,
            room_id=room.id,
            resource=("room", room.id),
        )
        session.flush()
    return room_out(session, room)


def merged_metadata(current: dict[str, Any], sent: RoomMetadataIn) -> dict[str, Any]:
    """The room's metadata with the keys sent replaced, those sent as null
    removed, and the others (any key the seed or a client left) kept. A
    key's object is stored whole, defaults included, so that the room
    shows the rules in force."""
    merged = dict(current)
    for name in sent.model_fields_set:
        value = getattr(sent, name)
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value.model_dump() if isinstance(value, BaseModel) else value
    return merged


# ----------------------------------------------------------------- members


@operation(
    bp,
    "POST",
    "/rooms/<id:room_id>/members",
    summary="Join a public room ({}), or invite a user ({user_id})",
    body=MemberAdd,
    responses={201: JoinedMemberOut},
    errors=(403, 409),
)
def add_member(session: Session, room_id: int, body: MemberAdd) -> tuple[JoinedMemberOut, int]:
    room, me = visible_room(session, room_id, g.user, lock=True)  # lock: max_members
    target_id = body.user_id or g.user.id
    if target_id == g.user.id:
        if me is not None:
            raise ApiError(409, "already_member", "You are already a member.")
        invited_by = None
    else:
        if me is None:
            raise forbidden("Join the room first.")
        if not (me.can_invite or rank(room, me) >= MODERATOR_RANK):
            raise forbidden("You may not invite to this room.")
        usable_user(session, target_id)
        if membership(session, room.id, target_id) is not None:
            raise ApiError(409, "already_member", "That user is already a member.")
        invited_by = g.user.id
    check_not_banned(session, room, target_id)
    if room.is_archived:
        raise ApiError(409, "room_archived", "The room is archived.")
    if room.member_count >= room.max_members:
        raise ApiError(
            409,
            "room_full",
            "The room has reached its maximum number of members.",
            {"max_members": room.max_members},
        )
    member = RoomMember(room_id=room.id, user_id=target_id, invited_by=invited_by)
    restore_mute(session, member)
    session.add(member)
    session.flush()
    session.refresh(member)
    joined = member_out(session, room, member).model_dump()
    return JoinedMemberOut(**joined, welcome_message=room.welcome_message), 201


def check_not_banned(session: Session, room: Room, user_id: int) -> None:
    """A banned user neither rejoins nor is invited back before the ban
    ends; an ended ban's row goes now."""
    ban = active_ban(session, room.id, user_id)
    if ban is not None:
        raise ApiError(
            403,
            "banned",
            "You are banned from this room."
            if user_id == g.user.id
            else "That user is banned from this room.",
            {"banned_until": ban.banned_until.isoformat()},
        )
    session.execute(delete(RoomBan).where(RoomBan.room_id == room.id, RoomBan.user_id == user_id))


@operation(
    bp,
    "DELETE",
    "/rooms/<id:room_id>/members/<id:user_id>",
    summary="Leave (your own id), or kick a member, which bans them for ?ban_seconds=",
    query=KickQuery,
    responses={204: None},
    errors=(403, 409),
)
def remove_member(
    session: Session, room_id: int, user_id: int, query: KickQuery
) -> tuple[None, int]:
    room, me = member_of(session, room_id, g.user)
    target = membership(session, room.id, user_id, lock=True)
    if target is None:
        raise not_found()
    if user_id == room.owner_id:
        raise ApiError(409, "owner_cannot_leave", "The owner cannot leave or be removed.")
    if user_id == g.user.id:
        if query.ban_seconds is not None:
            raise ApiError(
                422,
                "validation_failed",
                "The query string is not valid.",
                {"ban_seconds": "only a kick bans"},
            )
    else:
        kick(session, room, me, target, query.ban_seconds)
    remember_mute(session, target)
    session.delete(target)
    return None, 204


def kick(
    session: Session, room: Room, me: RoomMember, target: RoomMember, ban_seconds: int | None
) -> None:
    """A kick is a ban for ban_seconds (KICK_BAN_DEFAULT_SECONDS unless
    given): otherwise the member of a public room would be back at once."""
    if managing_rank(room, me) < MODERATOR_RANK:
        raise forbidden("You may not remove this member.")
    check_outranks(room, me, target, "You may not remove this member.")
    seconds = ban_seconds or get_settings().kick_ban_default_seconds
    fields = {
        "banned_until": func.now() + timedelta(seconds=seconds),
        "banned_by": me.user_id,
        "banned_by_rank": managing_rank(room, me),
        "created_at": func.now(),
    }
    banned_until = session.scalars(
        insert(RoomBan)
        .values(room_id=room.id, user_id=target.user_id, **fields)
        .on_conflict_do_update(index_elements=[RoomBan.room_id, RoomBan.user_id], set_=fields)
        .returning(RoomBan.banned_until)
    ).one()
    audit.record(
        session,
        "member_kicked",
        {"user_id": target.user_id, "banned_until": banned_until.isoformat()},
        user_id=g.user.id,
        room_id=room.id,
        resource=("user", target.user_id),
        severity=AuditSeverity.warning,
    )


def ban_out(session: Session, ban: RoomBan) -> BanOut:
    return BanOut(
        room_id=ban.room_id,
        user=user_ref(session.get_one(User, ban.user_id)),
        banned_until=ban.banned_until,
        banned_by=ban.banned_by,
        created_at=ban.created_at,
    )


def moderator_of(session: Session, room_id: int) -> tuple[Room, RoomMember]:
    room, me = member_of(session, room_id, g.user)
    if managing_rank(room, me) < MODERATOR_RANK:
        raise forbidden("Only moderators see and lift bans.")
    return room, me


@operation(
    bp,
    "GET",
    "/rooms/<id:room_id>/bans",
    summary="The room's bans in force (moderators)",
    responses={200: BanList},
    errors=(403,),
)
def list_bans(session: Session, room_id: int) -> BanList:
    room, _ = moderator_of(session, room_id)
    bans = session.scalars(
        select(RoomBan)
        .where(RoomBan.room_id == room.id, RoomBan.banned_until > func.now())
        .order_by(RoomBan.banned_until)
    )
    return BanList(bans=[ban_out(session, ban) for ban in bans])


@operation(
    bp,
    "DELETE",
    "/rooms/<id:room_id>/bans/<id:user_id>",
    summary="Lift a ban before it ends (a rank at least the banner's)",
    responses={204: None},
    errors=(403,),
)
def lift_ban(session: Session, room_id: int, user_id: int) -> tuple[None, int]:
    room, me = moderator_of(session, room_id)
    ban = active_ban(session, room.id, user_id)
    if ban is None:
        raise not_found()
    if managing_rank(room, me) < ban.banned_by_rank:
        raise forbidden("Only a rank at least that of the ban's author may lift it.")
    session.delete(ban)
    audit.record(
        session,
        "member_unbanned",
        {"user_id": user_id, "banned_until": ban.banned_until.isoformat()},
        user_id=g.user.id,
        room_id=room.id,
        resource=("user", user_id),
    )
    return None, 204


def remember_mute(session: Session, member: RoomMember) -> None:
    """Keep a mute in force past the membership, so that leaving and
    rejoining (or being kicked and invited back) does not lift it."""
    if muted_now(member):
        session.merge(
            RoomMute(room_id=member.room_id, user_id=member.user_id, muted_until=member.muted_until)
        )


def restore_mute(session: Session, member: RoomMember) -> None:
    mute = session.get(RoomMute, (member.room_id, member.user_id))
    if mute is None:
        return
    member.is_muted, member.muted_until = True, mute.muted_until
    session.delete(mute)
    if not muted_now(member):  # it ran out while they were away
        member.is_muted, member.muted_until = False, None


@operation(
    bp,
    "PATCH",
    "/rooms/<id:room_id>/members/<id:user_id>",
    summary="Change a member's role, permissions or mute",
    body=MemberPatch,
    responses={200: MemberOut},
    errors=(403,),
)
def update_member(session: Session, room_id: int, user_id: int, body: MemberPatch) -> MemberOut:
    room, me = member_of(session, room_id, g.user)
    target = membership(session, room.id, user_id, lock=True)
    if target is None:
        raise not_found()
    if user_id == g.user.id:
        # A muted moderator would unmute themselves, a member with
        # can_manage_members lift their own mute or grant themselves more.
        raise forbidden("Nobody changes their own role, permissions or mute.")
    changes = body.model_dump(exclude_unset=True)
    reject_nulls(changes, NULLABLE_MEMBER_FIELDS)
    check_member_change(room, me, target, changes)
    permission_changes = apply_permissions(target, changes)
    mute_change = apply_mute(target, changes)
    if permission_changes:
        audit.record(
            session,
            "member_permissions_changed",
            {"changes": permission_changes},
            user_id=g.user.id,
            room_id=room.id,
            resource=("user", user_id),
        )
    if mute_change:
        audit.record(
            session,
            "member_muted" if target.is_muted else "member_unmuted",
            mute_change,
            user_id=g.user.id,
            room_id=room.id,
            resource=("user", user_id),
        )
    session.flush()
    return member_out(session, room, target)


def check_member_change(
    room: Room, me: RoomMember, target: RoomMember, changes: dict[str, Any]
) -> None:
    """Roles and permissions are for the owner and admins, mutes also for
    moderators and can_manage_members; nobody acts on an equal or higher
    rank, or grants a rank equal to their own."""
    check_outranks(room, me, target, "You may not change a member of equal or higher rank.")
    acting_rank = managing_rank(room, me)
    if {"role", "can_invite", "can_manage_messages", "can_manage_members"} & changes.keys():
        my_rank = rank(room, me)
        if my_rank < ADMIN_RANK:
            raise forbidden("Only the owner or an admin may change roles and permissions.")
        role = changes.get("role")
        if role is not None and RANK[RoomMemberRole(role)] >= my_rank:
            raise forbidden("You may only grant a role below your own.")
    if {"is_muted", "muted_until"} & changes.keys() and acting_rank < MODERATOR_RANK:
        raise forbidden("You may not mute members.")


def apply_permissions(target: RoomMember, changes: dict[str, Any]) -> dict[str, list[Any]]:
    changed: dict[str, list[Any]] = {}
    for name in ("role", "can_invite", "can_manage_messages", "can_manage_members"):
        if name in changes:
            value = RoomMemberRole(changes[name]) if name == "role" else changes[name]
            old = getattr(target, name)
            if old != value:
                changed[name] = [getattr(old, "value", old), changes[name]]
                setattr(target, name, value)
    return changed


def apply_mute(target: RoomMember, changes: dict[str, Any]) -> dict[str, Any] | None:
    if "is_muted" not in changes and "muted_until" not in changes:
        return None
    muted = changes.get("is_muted", True)
    until: datetime | None = changes.get("muted_until") if muted else None  # aware (schema)
    target.is_muted, target.muted_until = muted, until
    return {"is_muted": muted, "muted_until": until.isoformat() if until else None}
