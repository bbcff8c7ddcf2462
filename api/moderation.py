"""Reports and review of room messages: a member reports a message, the
room's moderators list what is flagged or held and approve or reject it.
The system's side (auto-moderation, holds at the report threshold) is
veza/messages/moderation.py; every action here is audited."""

from __future__ import annotations

from flask import Blueprint, g
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api import audit
from api.access import can_moderate_messages, forbidden, visible_message, visible_room
from api.errors import ApiError
from api.messages import message_out, page
from api.request_context import request_id
from api.schemas import MessageOut, MessagePage, ModerationIn, PageQuery, ReportIn, ReportOut
from api.spec import operation
from db.models import AuditSeverity, Message, MessageReport, ModerationStatus, Room
from veza import jobs, outbox
from veza.files import blocklist
from veza.messages.moderation import review

bp = Blueprint("moderation", __name__)

DECISIONS = {"approve": ModerationStatus.approved, "reject": ModerationStatus.rejected}


def moderated_message(session: Session, message_id: int) -> tuple[Message, Room]:
    """A room message the user may moderate (row locked); a DM has no
    moderators."""
    message, room, member = visible_message(session, message_id, g.user, lock=True)
    if room is None or not can_moderate_messages(room, member):
        raise forbidden("Only the room's moderators may moderate this message.")
    return message, room


@operation(
    bp,
    "POST",
    "/messages/<id:message_id>/report",
    summary="Report a room message to its moderators (once per message)",
    body=ReportIn,
    responses={201: ReportOut},
    errors=(403, 409),
)
def report_message(session: Session, message_id: int, body: ReportIn) -> tuple[ReportOut, int]:
    message, room, member = visible_message(session, message_id, g.user, lock=True)
    if room is None or member is None:
        raise forbidden("Only members of a room may report its messages.")
    if message.author_id == g.user.id:
        raise forbidden("You cannot report your own message.")
    report = session.scalar(
        insert(MessageReport)
        .values(
            message_id=message.id,
            message_created_at=message.created_at,
            room_id=room.id,
            reporter_id=g.user.id,
            reason=body.reason,
        )
        .on_conflict_do_nothing(constraint="message_reports_message_reporter_key")
        .returning(MessageReport)
    )
    if report is None:
        raise ApiError(409, "already_reported", "You already reported this message.")
    # A new report puts even a message a moderator decided on back in the
    # queue; review() leaves such a message's status as it is.
    message.is_flagged = True
    review(session, message.id)
    audit.record(
        session,
        "message_reported",
        {"message_id": message.id, "author_id": message.author_id, "reason": body.reason},
        user_id=g.user.id,
        room_id=room.id,
        resource=("message", message.id),
    )
    return ReportOut.model_validate(report, from_attributes=True), 201


@operation(
    bp,
    "GET",
    "/rooms/<id:room_id>/moderation/queue",
    summary="Flagged, held and auto-rejected messages to review, newest first (moderators)",
    query=PageQuery,
    responses={200: MessagePage},
    errors=(403,),
)
def moderation_queue(session: Session, room_id: int, query: PageQuery) -> MessagePage:
    room, member = visible_room(session, room_id, g.user)
    if not can_moderate_messages(room, member):
        raise forbidden("Only the room's moderators may see its moderation queue.")
    # is_flagged is what idx_messages_flagged covers.
    return page(
        session,
        "m.is_flagged AND m.room_id = :room_id",
        {"room_id": room.id},
        query,
        room.message_retention_days,
    )


@operation(
    bp,
    "POST",
    "/messages/<id:message_id>/moderation",
    summary="Approve or reject a room message (moderators)",
    body=ModerationIn,
    responses={200: MessageOut},
    errors=(403,),
)
def moderate_message(session: Session, message_id: int, body: ModerationIn) -> MessageOut:
    message, room = moderated_message(session, message_id)
    before = message.moderation_status
    message.moderation_status = DECISIONS[body.action]
    message.is_flagged = False
    message.moderated_by = g.user.id
    message.moderation_reason = body.reason
    audit.record(
        session,
        "message_moderated",
        {
            "message_id": message.id,
            "author_id": message.author_id,
            "action": body.action,
            "from": before.value,
            "reason": body.reason,
        },
        user_id=g.user.id,
        room_id=room.id,
        resource=("message", message.id),
        severity=AuditSeverity.warning,
    )
    if body.action == "approve":
        # Its files that matched the image blocklist are the moderator's
        # call too (the message row is locked first, as the pipeline does).
        blocklist.release(session, message.id, g.user.id)
        # A held message notified nobody: messages.index does it now (and
        # is idempotent for a message that was only flagged).
        outbox.enqueue(session, jobs.INDEX_MESSAGE, message.id, request_id=request_id())
    session.flush()
    return message_out(session, message.id, room)
