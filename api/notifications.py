"""Notifications (veza/notifications/): the caller's feed and read marks,
their email choice and its one-click unsubscribe link, and the
notification level of each room and DM of theirs.

The feed shows only what the caller may still see (visibility.py), never a
deleted message. Reading a room or a DM (POST .../read) also marks its
notifications read up to that message (`mark_read_through`), so that what
was read in the chat is never emailed as missed.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from api.access import member_of, not_found, participant_conversation
from api.schemas import (
    NotificationLevelIn,
    NotificationLevelOut,
    NotificationOut,
    NotificationPage,
    NotificationQuery,
    NotificationSettingsIn,
    NotificationSettingsOut,
    NotificationsMarkedOut,
    NotificationsReadIn,
)
from api.spec import operation
from db.models import DirectConversationParticipant, NotificationLevel, RoomMember, User
from veza.messages.visibility import VISIBLE_TO_VIEWER
from veza.notifications.unsubscribe import user_of

bp = Blueprint("notifications", __name__)

# The caller's notifications whose message they may still see, over alias
# n; m is the message.
SHOWN = f"""
FROM notifications n
JOIN messages m ON m.id = n.message_id AND m.created_at = n.message_created_at
WHERE n.user_id = :viewer AND NOT m.is_deleted AND {VISIBLE_TO_VIEWER}
"""

FEED = f"""
SELECT n.id, n.kind::text AS kind, n.room_id, n.conversation_id, n.created_at, n.read_at,
       json_build_object(
           'id', m.id, 'content', m.content, 'created_at', m.created_at,
           'author', (SELECT json_build_object('id', a.id, 'username', a.username,
                                               'display_name', a.display_name)
                      FROM users a WHERE a.id = m.author_id)) AS message
{SHOWN} AND {{filters}}
ORDER BY n.id DESC
LIMIT :limit
"""

UNREAD_COUNT = f"SELECT count(*) {SHOWN} AND n.read_at IS NULL"


def unread_count(session: Session) -> int:
    return session.scalar(text(UNREAD_COUNT), {"viewer": g.user.id}) or 0


@operation(
    bp,
    "GET",
    "/notifications",
    summary="Your notifications, newest first; ?unread=true for the unread ones",
    query=NotificationQuery,
    responses={200: NotificationPage},
)
def list_notifications(session: Session, query: NotificationQuery) -> NotificationPage:
    filters = ["n.read_at IS NULL"] if query.unread else ["true"]
    if query.before is not None:
        filters.append("n.id < :before")
    rows = session.execute(
        text(FEED.replace("{filters}", " AND ".join(filters))),
        {
            "viewer": g.user.id,
            "before": query.before,
            "limit": query.limit + 1,  # one more says whether an older page exists
        },
    ).mappings()
    found = [NotificationOut.model_validate(dict(row)) for row in rows]
    page = found[: query.limit]
    return NotificationPage(
        notifications=page,
        unread_count=unread_count(session),
        next_before=page[-1].id if len(found) > query.limit else None,
    )


@operation(
    bp,
    "POST",
    "/notifications/read",
    summary="Mark notifications read: these ids, or every one up to an id",
    body=NotificationsReadIn,
    responses={200: NotificationsMarkedOut},
)
def mark_notifications_read(session: Session, body: NotificationsReadIn) -> NotificationsMarkedOut:
    which = "n.id = ANY(:ids)" if body.ids is not None else "n.id <= :up_to"
    marked = session.execute(
        text(
            f"UPDATE notifications n SET read_at = now()"
            f" WHERE n.user_id = :viewer AND n.read_at IS NULL AND {which} RETURNING 1"
        ),
        {"viewer": g.user.id, "ids": body.ids, "up_to": body.up_to},
    ).all()
    return NotificationsMarkedOut(marked=len(marked), unread_count=unread_count(session))


def mark_read_through(
    session: Session,
    message_id: int,
    *,
    room_id: int | None = None,
    conversation_id: int | None = None,
) -> None:
    """The caller read the room (or DM) up to `message_id`: so are its
    notifications."""
    place = "room_id = :room_id" if room_id is not None else "conversation_id = :conversation_id"
    session.execute(
        text(
            f"UPDATE notifications SET read_at = now() WHERE user_id = :viewer AND {place}"
            " AND message_id <= :message_id AND read_at IS NULL"
        ),
        {
            "viewer": g.user.id,
            "room_id": room_id,
            "conversation_id": conversation_id,
            "message_id": message_id,
        },
    )


@operation(
    bp,
    "GET",
    "/notifications/settings",
    summary="Whether you get missed-message emails",
    responses={200: NotificationSettingsOut},
)
def notification_settings(session: Session) -> NotificationSettingsOut:
    return NotificationSettingsOut(email=g.user.email_notifications)


@operation(
    bp,
    "PUT",
    "/notifications/settings",
    summary="Turn missed-message emails on or off",
    body=NotificationSettingsIn,
    responses={200: NotificationSettingsOut},
)
def set_notification_settings(
    session: Session, body: NotificationSettingsIn
) -> NotificationSettingsOut:
    session.execute(update(User).where(User.id == g.user.id).values(email_notifications=body.email))
    return NotificationSettingsOut(email=body.email)


UNSUBSCRIBE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Veza emails</title></head>
<body><form method="post"><p>Stop the missed-message emails from Veza?</p>
<button type="submit">Unsubscribe</button></form></body></html>
"""

UNSUBSCRIBED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Veza emails</title></head>
<body><p>Done: Veza will not email you about missed messages any more.</p></body></html>
"""


def unsubscribing_user(session: Session) -> User:
    """The user the link's token was signed for; 404 for any other token
    (nothing says whether a user exists)."""
    user_id = user_of(request.args.get("token", ""))
    user = session.get(User, user_id) if user_id is not None else None
    if user is None:
        raise not_found()
    return user


@operation(
    bp,
    "GET",
    "/notifications/unsubscribe",
    summary="The unsubscribe link of an email: a page that asks to confirm (?token=)",
    responses={200: None},
    auth=False,
    binary=True,
    errors=(404,),
)
def unsubscribe_page(session: Session) -> Response:
    # A GET changes nothing: mail scanners open links before people do.
    unsubscribing_user(session)
    return Response(UNSUBSCRIBE_PAGE, mimetype="text/html")


@operation(
    bp,
    "POST",
    "/notifications/unsubscribe",
    summary="Stop missed-message emails (?token=): the page's button, or one click (RFC 8058)",
    responses={200: None},
    auth=False,
    binary=True,
    errors=(404,),
)
def unsubscribe(session: Session) -> Response:
    user = unsubscribing_user(session)
    user.email_notifications = False
    return Response(UNSUBSCRIBED_PAGE, mimetype="text/html")


@operation(
    bp,
    "PUT",
    "/rooms/<id:room_id>/notifications",
    summary="Your notification level in a room: all, mentions or none",
    body=NotificationLevelIn,
    responses={200: NotificationLevelOut},
    errors=(403,),
)
def set_room_level(
    session: Session, room_id: int, body: NotificationLevelIn
) -> NotificationLevelOut:
    _, member = member_of(session, room_id, g.user)
    session.execute(
        update(RoomMember)
        .where(RoomMember.id == member.id)
        .values(notification_level=NotificationLevel(body.level))
    )
    return NotificationLevelOut(level=body.level)


@operation(
    bp,
    "PUT",
    "/conversations/<id:conversation_id>/notifications",
    summary="Your notification level in a DM: all, mentions or none",
    body=NotificationLevelIn,
    responses={200: NotificationLevelOut},
)
def set_conversation_level(
    session: Session, conversation_id: int, body: NotificationLevelIn
) -> NotificationLevelOut:
    conversation = participant_conversation(session, conversation_id, g.user)
    session.execute(
        update(DirectConversationParticipant)
        .where(
            DirectConversationParticipant.conversation_id == conversation.id,
            DirectConversationParticipant.user_id == g.user.id,
        )
        .values(notification_level=NotificationLevel(body.level))
    )
    return NotificationLevelOut(level=body.level)
