"""Missed-message email (maintenance.email_missed_notifications, every
minute): a user who left a notification unread for
NOTIFY_EMAIL_DELAY_SECONDS, and has used no session since it was written,
gets one email listing everything they missed, at most one per
NOTIFY_EMAIL_PERIOD_SECONDS, unless they turned emails off.

- **What "missed" means.** Unread, never emailed, its message still there
  and visible to them, and no session of theirs active since it was
  written (user_sessions.last_activity_at): someone who was online and let
  it be has not missed it. Only the last MISSED_WINDOW counts: after an
  SMTP outage of days, week-old chatter is no news worth an email.
- **Never twice.** Each user's email is built and sent inside a
  transaction that holds their user row (FOR UPDATE SKIP LOCKED: a second
  run passes them by) and stamps the listed notifications `emailed_at` and
  the user `notification_email_at`. A re-run, or a message's fan-out run
  again, finds nothing left to send. The one gap is a crash between the
  server accepting the email and the commit: that user may get it twice,
  which is the side SMTP's own at-least-once delivery errs on too.
- **Failures.** A refused address spaces that user's next try by a period
  (`emails_refused`); a server that cannot be reached or fails ends the run
  as failed, with the reason, and the next minute's run tries again.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.engine import session_scope
from veza.mail import Mailer, MailError, enabled
from veza.maintenance.run import Run
from veza.messages.visibility import VISIBLE_TO_VIEWER
from veza.notifications.unsubscribe import unsubscribe_url
from veza.settings import get_settings

log = logging.getLogger(__name__)

MISSED_WINDOW = timedelta(days=7)
# What an email lists; beyond, it says how many more there are.
MAX_LISTED = 20
EXCERPT_CHARS = 200

# A notification `n` the user missed (see the module's docstring), over the
# settings' :delay and :period seconds and :window.
MISSED = """
n.read_at IS NULL AND n.emailed_at IS NULL
AND n.created_at BETWEEN now() - :window AND now() - make_interval(secs => :delay)
AND NOT EXISTS (
    SELECT 1 FROM user_sessions s
    WHERE s.user_id = n.user_id AND s.last_activity_at >= n.created_at)
"""

# Users who may be emailed now, over alias u.
EMAILABLE = """
u.email_notifications AND u.is_active AND u.deleted_at IS NULL
AND (u.notification_email_at IS NULL
     OR u.notification_email_at <= now() - make_interval(secs => :period))
"""

DUE_USERS = f"""
SELECT DISTINCT n.user_id FROM notifications n JOIN users u ON u.id = n.user_id
WHERE {MISSED} AND {EMAILABLE} AND n.user_id > :after
ORDER BY n.user_id LIMIT :size
"""

LOCK_USER = f"""
SELECT u.id, u.email, u.username, u.display_name FROM users u
WHERE u.id = :user_id AND {EMAILABLE}
FOR UPDATE SKIP LOCKED
"""

# The user's missed notifications with what the email says of each; the
# viewer is the user (visibility.py).
MISSED_OF_USER = f"""
SELECT n.id, n.kind::text AS kind, m.content, r.name AS room_name,
       a.username AS author
FROM notifications n
JOIN messages m ON m.id = n.message_id AND m.created_at = n.message_created_at
JOIN users a ON a.id = m.author_id
LEFT JOIN rooms r ON r.id = n.room_id
WHERE n.user_id = :user_id AND {MISSED} AND NOT m.is_deleted AND {VISIBLE_TO_VIEWER}
ORDER BY n.id
"""

STAMP = """
WITH listed AS (
    UPDATE notifications SET emailed_at = now() WHERE id = ANY(:ids) RETURNING 1)
UPDATE users SET notification_email_at = now() WHERE id = :user_id
"""

# What each kind says, about @author in #room.
SAYS = {
    "mention": "@{author} mentioned you in #{room}",
    "reply": "@{author} replied to you in #{room}",
    "message": "@{author} wrote in #{room}",
    "dm": "@{author} sent you a direct message",
}


@dataclass(frozen=True)
class Missed:
    id: int
    line: str  # who did what, where
    excerpt: str


def send_missed(run: Run) -> None:
    """Email every user who is due, a user per transaction."""
    if not enabled():
        log.info("SMTP_HOST is not set: no missed-message email is sent")
        return
    params = _params()
    after = 0
    with Mailer() as mailer:
        for size in run.batches(initial=100):
            with session_scope() as session:
                users = list(
                    session.scalars(text(DUE_USERS), params | {"after": after, "size": size})
                )
            for user_id in users:
                _email_user(run, mailer, user_id, params)
            if len(users) < size:
                return
            after = users[-1]


def count_due(run: Run) -> None:
    """A dry run: the users who would be emailed now."""
    with session_scope() as session:
        due = session.scalar(
            text(f"SELECT count(*) FROM ({DUE_USERS}) due"),
            _params() | {"after": 0, "size": None},
        )
    run.add(emails_due=due or 0)


def _params() -> dict[str, Any]:
    settings = get_settings()
    return {
        "delay": settings.notify_email_delay_seconds,
        "period": settings.notify_email_period_seconds,
        "window": MISSED_WINDOW,
    }


def _email_user(run: Run, mailer: Mailer, user_id: int, params: dict[str, Any]) -> None:
    with session_scope() as session:
        user = session.execute(text(LOCK_USER), params | {"user_id": user_id}).mappings().first()
        # None: another run has them, or they turned emails off meanwhile.
        missed = _missed(session, user_id, params) if user else []
        if not missed:
            return
        try:
            mailer.send(missed_email(user, missed))
        except MailError as exc:
            if not exc.refused:
                raise
            log.warning("missed-message email to user %s refused: %s", user_id, exc)
            run.add(emails_refused=1)
            missed = []  # nothing was listed; the stamp spaces the next try
        else:
            run.add(emails_sent=1, notifications_emailed=len(missed))
        session.execute(text(STAMP), {"ids": [m.id for m in missed], "user_id": user_id})


def _missed(session: Session, user_id: int, params: dict[str, Any]) -> list[Missed]:
    rows = session.execute(
        text(MISSED_OF_USER), params | {"user_id": user_id, "viewer": user_id}
    ).mappings()
    return [
        Missed(
            row["id"],
            SAYS[row["kind"]].format(author=row["author"], room=row["room_name"]),
            _excerpt(row["content"]),
        )
        for row in rows
    ]


def _excerpt(content: str) -> str:
    flat = " ".join(content.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


def missed_email(user: Any, missed: list[Missed]) -> EmailMessage:
    """The email: a plain-text and an HTML part saying the same, and the
    headers that give mail clients a one-click unsubscribe button."""
    settings = get_settings()
    unsubscribe = unsubscribe_url(user["id"])
    listed, more = missed[:MAX_LISTED], len(missed) - MAX_LISTED
    subject = f"{len(missed)} new notification{'s' if len(missed) > 1 else ''} on Veza"
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.smtp_from
    message["To"] = formataddr((user["display_name"] or user["username"], user["email"]))
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid("veza.notifications")
    message["Auto-Submitted"] = "auto-generated"
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    lines = [f"While you were away on Veza ({settings.public_url}):", ""]
    lines += [f"- {m.line}: {m.excerpt}" for m in listed]
    if more > 0:
        lines.append(f"- and {more} more")
    lines += ["", f"Stop these emails: {unsubscribe}"]
    message.set_content("\n".join(lines) + "\n")
    items = "".join(
        f"<li><strong>{html.escape(m.line)}</strong>: {html.escape(m.excerpt)}</li>" for m in listed
    ) + (f"<li>and {more} more</li>" if more > 0 else "")
    link = html.escape(settings.public_url, quote=True)
    message.add_alternative(
        f'<p>While you were away on <a href="{link}">Veza</a>:</p><ul>{items}</ul>'
        f'<p><a href="{html.escape(unsubscribe, quote=True)}">Stop these emails</a></p>',
        subtype="html",
    )
    return message
