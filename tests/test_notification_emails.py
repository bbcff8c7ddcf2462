"""Missed-message emails, sent by maintenance.email_missed_notifications to
a real SMTP server (aiosmtpd): one per user who left notifications unread
while away, never twice, never to someone who was online since or turned
emails off; the one-click unsubscribe link works; an unreachable server
fails the run and loses nothing."""

from __future__ import annotations

import re

import pytest

from tests.api_helpers import error_code
from tests.maintenance_helpers import run_task
from tests.smtp import smtp_server  # noqa: F401  (the fixture)
from tests.test_api_notifications import indexed

TASK = "maintenance.email_missed_notifications"


@pytest.fixture
def emailing(environment, smtp_server):  # noqa: F811
    """Emails on, through the test's SMTP server, due as soon as written."""
    inbox, port = smtp_server
    environment(
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(port),
        SMTP_STARTTLS="false",
        NOTIFY_SIGNING_KEY="test-signing-key",
        NOTIFY_EMAIL_DELAY_SECONDS="0",
        PUBLIC_URL="https://veza.example",
    )
    return inbox


def parts(message) -> tuple[str, str]:
    plain = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return plain, html


def test_a_user_away_gets_one_email_listing_what_they_missed(api, db, emailing):
    alice, bob, carol, dave = (api.register() for _ in range(4))
    room = api.room(alice, name="rustaceans")
    for user in (bob, carol, dave):
        api.join(room, user)
    assert api.put("/notifications/settings", dave, json={"email": False}).json == {"email": False}
    said = [
        api.say(room, alice, f"@{bob.username} @{carol.username} <b>borrow</b> checker?"),
        api.say(room, alice, "second thought"),
    ]
    indexed(*(m["id"] for m in said))
    # carol used the app since the notifications were written: not away.
    db.execute(
        "UPDATE user_sessions SET last_activity_at = clock_timestamp() WHERE user_id = %s",
        (carol.id,),
    )

    result = run_task(TASK)
    assert result["counts"] == {"emails_sent": 1, "notifications_emailed": 2}
    assert [to for to, _ in emailing.messages] == [[f"{bob.username}@example.com"]]
    (message,) = emailing.to(f"{bob.username}@example.com")
    assert message["Subject"] == "2 new notifications on Veza"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain, html = parts(message)
    assert f"@{alice.username} mentioned you in #rustaceans" in plain
    assert "<b>borrow</b> checker?" in plain  # the text as written
    assert "&lt;b&gt;borrow&lt;/b&gt;" in html  # and never markup in the HTML part
    assert f"@{alice.username} wrote in #rustaceans: second thought" in plain

    # Never twice: not by the next run, nor by the messages' task run again.
    indexed(*(m["id"] for m in said))
    assert run_task(TASK)["counts"] == {}
    assert len(emailing.messages) == 1


def test_the_delay_and_the_period_space_the_emails(api, environment, emailing):
    alice, bob = api.register(), api.register()
    dm = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    first = api.post(f"/conversations/{dm}/messages", alice, json={"content": "are you there"})
    indexed(first.json["id"])
    environment(NOTIFY_EMAIL_DELAY_SECONDS="600")
    assert run_task(TASK)["counts"] == {}  # written just now: not missed yet
    environment(NOTIFY_EMAIL_DELAY_SECONDS="0")
    assert run_task(TASK)["counts"] == {"emails_sent": 1, "notifications_emailed": 1}
    plain, _ = parts(emailing.messages[0][1])
    assert f"@{alice.username} sent you a direct message: are you there" in plain

    second = api.post(f"/conversations/{dm}/messages", alice, json={"content": "hello?"})
    indexed(second.json["id"])
    assert run_task(TASK)["counts"] == {}  # an email went out within the period
    environment(NOTIFY_EMAIL_PERIOD_SECONDS="0")
    assert run_task(TASK)["counts"] == {"emails_sent": 1, "notifications_emailed": 1}


def test_the_unsubscribe_link_turns_the_emails_off_in_one_click(api, emailing):
    alice, bob = api.register(), api.register()
    dm = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    sent = api.post(f"/conversations/{dm}/messages", alice, json={"content": "ping"})
    indexed(sent.json["id"])
    run_task(TASK)
    ((_, message),) = emailing.messages
    link = re.fullmatch(r"<(.+)>", message["List-Unsubscribe"]).group(1)
    assert link in parts(message)[0]
    path = link.removeprefix("https://veza.example/api/v1")

    page = api.get(path)  # what a link scanner or a person opening it does
    assert page.status_code == 200
    assert b"<form" in page.data
    assert api.get("/notifications/settings", bob).json == {"email": True}
    clicked = api.post(path, data="List-Unsubscribe=One-Click")
    assert clicked.status_code == 200
    assert api.get("/notifications/settings", bob).json == {"email": False}

    forged = api.post(path.replace("token=", "token=x"))
    assert forged.status_code == 404
    assert error_code(forged) == "not_found"
    again = api.post(f"/conversations/{dm}/messages", alice, json={"content": "pong"})
    indexed(again.json["id"])
    assert run_task(TASK, dry_run=True)["counts"] == {"emails_due": 0}


def test_an_unreachable_smtp_server_fails_the_run_and_loses_nothing(api, db, environment, emailing):
    from tests.processes import free_port

    alice, bob = api.register(), api.register()
    dm = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    sent = api.post(f"/conversations/{dm}/messages", alice, json={"content": "anyone?"})
    indexed(sent.json["id"])
    from veza.settings import get_settings

    working_port = get_settings().smtp_port
    environment(SMTP_PORT=str(free_port()))  # nothing listens there
    with pytest.raises(Exception, match="SMTP"):
        run_task(TASK)
    failed = db.execute(
        "SELECT status, error FROM maintenance_runs WHERE task_name = %s ORDER BY id DESC LIMIT 1",
        (TASK,),
    ).fetchone()
    assert failed[0] == "failed"
    assert "SMTP" in failed[1]
    unsent = db.execute("SELECT count(*) FROM notifications WHERE emailed_at IS NULL")
    assert unsent.fetchone()[0] == 1

    environment(SMTP_PORT=str(working_port))  # the server is back
    assert run_task(TASK)["counts"] == {"emails_sent": 1, "notifications_emailed": 1}
    assert emailing.to(f"{bob.username}@example.com")
