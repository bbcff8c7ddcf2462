"""Notifications through the HTTP stack and the real messages.index task
(run here, as a worker runs it): who a message notifies by their level,
one row per recipient however often the task runs, a large room in
batches, the feed and its read marks, and what reading the chat marks."""

from __future__ import annotations

import pytest

from tests.api_helpers import error_code


def indexed(*message_ids: int) -> None:
    """messages.index, as a worker runs it after each post's outbox row."""
    from worker import app

    app.loader.import_default_modules()
    for message_id in message_ids:
        result = app.tasks["messages.index"].apply(args=[message_id])
        assert result.successful(), result.result


def kinds(api, user) -> dict[int, str]:
    """{message id: kind} of the user's feed."""
    feed = api.get("/notifications", user)
    assert feed.status_code == 200, feed.json
    return {n["message"]["id"]: n["kind"] for n in feed.json["notifications"]}


def set_level(api, user, path: str, level: str) -> None:
    answer = api.put(f"{path}/notifications", user, json={"level": level})
    assert answer.status_code == 200, answer.json
    assert answer.json == {"level": level}


def test_a_message_notifies_each_member_by_their_level_once(api, db):
    alice, bob, carol, dave, erin = (api.register() for _ in range(5))
    room = api.room(alice)
    for user in (bob, carol, dave, erin):
        api.join(room, user)
    set_level(api, carol, f"/rooms/{room}", "mentions")
    set_level(api, dave, f"/rooms/{room}", "none")
    set_level(api, erin, f"/rooms/{room}", "mentions")
    question = api.say(room, erin, "who knows rust?")
    indexed(question["id"])
    answer = api.say(
        room,
        alice,
        f"@{carol.username} and @{dave.username} do",
        parent_message_id=question["id"],
    )
    # Twice: a retry or a re-drive writes nothing more.
    indexed(answer["id"], answer["id"])

    assert kinds(api, bob) == {question["id"]: "message", answer["id"]: "message"}
    assert kinds(api, carol) == {answer["id"]: "mention"}
    assert kinds(api, dave) == {}  # mentioned, but asked for nothing
    assert kinds(api, erin) == {answer["id"]: "reply"}
    assert kinds(api, alice) == {question["id"]: "message"}  # never one's own
    rows = db.execute("SELECT count(*) FROM notifications WHERE message_id = %s", (answer["id"],))
    assert rows.fetchone()[0] == 3

    # An edit that mentions bob makes his notification a mention, still one.
    edited = api.patch(
        f"/messages/{answer['id']}", alice, json={"content": f"@{bob.username} knows"}
    )
    assert edited.status_code == 200, edited.json
    indexed(answer["id"])
    assert kinds(api, bob)[answer["id"]] == "mention"
    feed = api.get("/notifications", bob).json
    assert [n["message"]["id"] for n in feed["notifications"]] == [answer["id"], question["id"]]
    assert feed["notifications"][0]["message"]["author"]["username"] == alice.username
    assert feed["unread_count"] == 2


def test_a_dm_notifies_the_other_participant_unless_they_silenced_it(api):
    alice, bob = api.register(), api.register()
    dm = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    first = api.post(f"/conversations/{dm}/messages", alice, json={"content": "hi"}).json
    indexed(first["id"])
    assert kinds(api, bob) == {first["id"]: "dm"}
    assert kinds(api, alice) == {}

    set_level(api, bob, f"/conversations/{dm}", "none")
    second = api.post(f"/conversations/{dm}/messages", alice, json={"content": "hello?"}).json
    indexed(second["id"])
    assert kinds(api, bob) == {first["id"]: "dm"}
    stranger = api.register()
    hidden = api.put(f"/conversations/{dm}/notifications", stranger, json={"level": "all"})
    assert hidden.status_code == 404, hidden.json


def test_a_large_room_is_notified_in_batches_exactly_once(api, db, monkeypatch):
    from veza.notifications import fanout

    monkeypatch.setattr(fanout, "FANOUT_BATCH", 4)  # 13 members: 4 batches
    owner = api.register()
    room = api.room(owner)
    members = [api.register() for _ in range(12)]
    for member in members:
        api.join(room, member)
    late = api.register()
    message = api.say(room, owner, "everyone, look")
    api.join(room, late)  # joined after the post: not told about it
    indexed(message["id"], message["id"])

    notified = db.execute(
        "SELECT user_id, kind FROM notifications WHERE message_id = %s ORDER BY user_id",
        (message["id"],),
    ).fetchall()
    assert notified == [(member.id, "message") for member in members]


def test_the_feed_pages_and_is_marked_read_by_id_up_to_an_id_or_by_reading(api, db):
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    said = [api.say(room, alice, f"news {n}")["id"] for n in range(5)]
    indexed(*said)
    ids = {
        n["message"]["id"]: n["id"] for n in api.get("/notifications", bob).json["notifications"]
    }

    first = api.get("/notifications?limit=2", bob).json
    assert [n["message"]["id"] for n in first["notifications"]] == [said[4], said[3]]
    rest = api.get(f"/notifications?limit=10&before={first['next_before']}", bob).json
    assert [n["message"]["id"] for n in rest["notifications"]] == said[2::-1]
    assert rest["next_before"] is None

    marked = api.post("/notifications/read", bob, json={"ids": [ids[said[4]]]})
    assert marked.json == {"marked": 1, "unread_count": 4}
    marked = api.post("/notifications/read", bob, json={"up_to": ids[said[1]]})
    assert marked.json == {"marked": 2, "unread_count": 2}
    # Reading the room up to a message reads its notifications too.
    read = api.post(f"/rooms/{room}/read", bob, json={"message_id": said[2]})
    assert read.status_code == 200, read.json
    unread = api.get("/notifications?unread=true", bob).json
    assert [n["message"]["id"] for n in unread["notifications"]] == [said[3]]
    # Someone else's notifications are not marked by anyone but them.
    assert api.post("/notifications/read", alice, json={"up_to": 10**12}).json["marked"] == 0

    # A deleted message takes its notification out of the feed.
    assert api.delete(f"/messages/{said[3]}", alice).status_code in (200, 204)
    assert api.get("/notifications?unread=true", bob).json == {
        "notifications": [],
        "unread_count": 0,
        "next_before": None,
    }


@pytest.mark.parametrize(
    "body",
    [{}, {"ids": [1], "up_to": 1}, {"ids": []}, {"ids": ["1"]}, {"up_to": 0}],
)
def test_a_read_mark_that_does_not_say_which_is_refused(api, body):
    bob = api.register()
    answer = api.post("/notifications/read", bob, json=body)
    assert answer.status_code == 422, answer.json
    assert error_code(answer) == "validation_failed"
