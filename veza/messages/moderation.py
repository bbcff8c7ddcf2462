"""The system's moderation verdict on a room message, worked out after
commit by messages.index for every post and edit (before the notification
fan-out, so a held message notifies nobody), and again in the request of
each report.

The verdict is a pure function of the message's content, its reports and
its room's settings, recomputed whole each time, so a rerun gives the same
result and an edit that removes a blocked term lifts the hold it caused:

- the room's `metadata.auto_moderate` rules (blocked terms, links, too many
  mentions), when enabled, give its `action`: flag (`flagged`, still
  visible), hold (`pending`) or reject (`rejected`);
- an attached image that matched the image blocklist
  (veza/files/blocklist.py) holds it (`pending`);
- reports flag the message, and at the room's `flag_hold_threshold`
  distinct reporters (FLAG_HOLD_THRESHOLD by default) hold it;
- the strongest outcome wins (approved < flagged < pending < rejected), and
  every outcome but `approved` sets is_flagged, which puts the message in
  the moderation queue (idx_messages_flagged), where a false positive of
  the system can be approved.

A moderator's decision (moderated_by set) is final: the system never
changes its status again, whatever an edit or a rerun finds; only a new
report puts the message back in the queue (is_flagged), still visible if
approved. Direct messages have no room and no moderators: the system
leaves them alone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from db.models import File, Message, MessageReport, ModerationStatus, Room
from veza import audit
from veza.settings import get_settings

MAX_BLOCKED_TERMS = 200
MAX_TERM_LENGTH = 100
MAX_HOLD_THRESHOLD = 100

# The order in which outcomes win over one another.
SEVERITY = {
    ModerationStatus.approved: 0,
    ModerationStatus.flagged: 1,
    ModerationStatus.pending: 2,
    ModerationStatus.rejected: 3,
}
ACTION_STATUS = {
    "flag": ModerationStatus.flagged,
    "hold": ModerationStatus.pending,
    "reject": ModerationStatus.rejected,
}
# Hidden from all but the author and the room's moderators
# (veza/messages/visibility.py says it in SQL).
HELD_STATUSES = frozenset({ModerationStatus.pending, ModerationStatus.rejected})
LINK = re.compile(r"(?i)\b(?:https?://|www\.)\S")


def term(value: str) -> str:
    """A blocked term as it is matched: trimmed and casefolded. jsonb cannot
    store NUL, so a term holding one is refused here rather than by the
    database."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip().casefold()


BlockedTerm = Annotated[str, Field(min_length=1, max_length=MAX_TERM_LENGTH), AfterValidator(term)]


class AutoModerate(BaseModel):
    """A room's `metadata.auto_moderate`, as PATCH /rooms/{id} accepts it
    and this module reads it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    enabled: bool = False
    blocked_terms: Annotated[list[BlockedTerm], Field(max_length=MAX_BLOCKED_TERMS)] = []
    block_links: bool = False
    # The most users one message may mention; null for no limit.
    max_mentions: Annotated[int, Field(ge=0, le=1000)] | None = None
    action: Literal["flag", "hold", "reject"] = "hold"


def room_rules(meta: dict[str, Any]) -> AutoModerate | None:
    """The room's enabled rules, or None. The seed's `"auto_moderate": true`
    (a flag with no rules), or anything else not written through the API,
    holds no rules."""
    try:
        rules = AutoModerate.model_validate(meta.get("auto_moderate"))
    except ValidationError:
        return None
    return rules if rules.enabled else None


def hold_threshold(meta: dict[str, Any]) -> int:
    value = meta.get("flag_hold_threshold")
    if isinstance(value, int) and 1 <= value <= MAX_HOLD_THRESHOLD:
        return value
    return get_settings().flag_hold_threshold


def blocked_term_in(content: str, terms: list[str]) -> bool:
    """A term matches as a whole word (or words), case-insensitively: "ass"
    blocks "ass" but not "class"."""
    folded = content.casefold()
    return any(re.search(rf"(?<!\w){re.escape(t)}(?!\w)", folded) for t in terms)


def rule_violations(rules: AutoModerate, content: str, mentions: list[int]) -> list[str]:
    """The reasons the rules find against the content, in a stable order."""
    reasons = []
    if blocked_term_in(content, rules.blocked_terms):
        reasons.append("blocked term")
    if rules.block_links and LINK.search(content):
        reasons.append("link")
    if rules.max_mentions is not None and len(mentions) > rules.max_mentions:
        reasons.append(f"more than {rules.max_mentions} mentions")
    return reasons


def report_counts(session: Session, keys: list[tuple[int, datetime]]) -> dict[int, int]:
    """Message id -> its reports, for the messages of these keys that have any."""
    rows = session.execute(
        select(MessageReport.message_id, func.count())
        .where(tuple_(MessageReport.message_id, MessageReport.message_created_at).in_(keys))
        .group_by(MessageReport.message_id)
    )
    return dict(rows.tuples().all())


def held_attachments(session: Session, keys: list[tuple[int, datetime]]) -> set[int]:
    """The messages of these keys one of whose files matched the image
    blocklist and is held (veza/files/blocklist.py)."""
    return set(
        session.scalars(
            select(File.message_id).where(
                tuple_(File.message_id, File.message_created_at).in_(keys),
                File.meta.has_key("held"),
            )
        )
    )


def review(session: Session, message_id: int) -> None:
    """Set the system's verdict on a live room message: review_all of one."""
    review_all(session, {message_id: None})


def review_all(session: Session, messages: Mapping[int, str | None]) -> None:
    """Set the system's verdict on the live room messages among these
    (message id -> the request it is reviewed for, None for the bound one),
    rows locked in id order, reports, attachments and rooms read once for
    them all; audit each change of status. A message a moderator decided on
    keeps its status; only flag_count follows its reports."""
    found = session.scalars(
        select(Message)
        .where(
            Message.id.in_(list(messages)),
            Message.room_id.is_not(None),
            Message.is_deleted.is_(False),
        )
        .order_by(Message.id)
        .with_for_update()
    ).all()
    if not found:
        return
    keys = [(message.id, message.created_at) for message in found]
    reports, held = report_counts(session, keys), held_attachments(session, keys)
    rooms = session.scalars(select(Room).where(Room.id.in_({m.room_id for m in found}))).all()
    metas = {room.id: room.meta for room in rooms}
    for message in found:
        assert message.room_id is not None
        message.flag_count = reports.get(message.id, 0)
        if message.moderated_by is None:
            request_id = messages[message.id]
            judge(session, message, metas[message.room_id], message.id in held, request_id)


def judge(
    session: Session,
    message: Message,
    meta: dict[str, Any],
    held_image: bool,
    request_id: str | None,
) -> None:
    """The verdict on one message, from its room's settings (`meta`), its
    attachments and its flag_count."""
    rules = room_rules(meta)
    reasons = rule_violations(rules, message.content, message.mentions) if rules else []
    outcomes = [ACTION_STATUS[rules.action]] if rules and reasons else []
    if held_image:
        reasons.append("blocklisted image")
        outcomes.append(ModerationStatus.pending)
    if message.flag_count:
        reasons.append(f"reports: {message.flag_count}")
        held = message.flag_count >= hold_threshold(meta)
        outcomes.append(ModerationStatus.pending if held else ModerationStatus.flagged)
    status = max(outcomes, key=SEVERITY.__getitem__, default=ModerationStatus.approved)
    if status != message.moderation_status:
        audit.record(
            session,
            "message_auto_moderated",
            {"from": message.moderation_status.value, "to": status.value, "reasons": reasons},
            room_id=message.room_id,
            resource_type="message",
            resource_id=message.id,
            request_id=uuid.UUID(request_id) if request_id else None,
        )
    message.moderation_status = status
    message.is_flagged = status != ModerationStatus.approved
    message.moderation_reason = "; ".join(reasons) or None
