"""messages.index: the bookkeeping a post owes, run directly on the real
database (the outbox test runs it through a real worker)."""

from __future__ import annotations


def index(message_id: int) -> bool:
    from db.engine import session_scope
    from veza.messages.counters import index_messages

    with session_scope() as session:
        return bool(index_messages(session, [message_id]))


def test_room_post_recounts_the_authors_messages_idempotently(api, db):
    alice = api.register()
    room = api.room(alice)
    first, second = api.say(room, alice, "one"), api.say(room, alice, "two")
    for _ in range(2):  # at-least-once delivery: twice is the same as once
        assert index(second["id"]) is True
    assert db.execute(
        "SELECT message_count FROM room_members WHERE user_id = %s", (alice.id,)
    ).fetchone() == (2,)
    assert db.execute(
        "SELECT last_seen_at = %s::timestamptz FROM users WHERE id = %s",
        (second["created_at"], alice.id),
    ).fetchone() == (True,)
    api.delete(f"/messages/{first['id']}", alice)
    index(first["id"])
    assert db.execute(
        "SELECT message_count FROM room_members WHERE user_id = %s", (alice.id,)
    ).fetchone() == (1,)


def test_dm_post_recounts_the_other_participants_unread(api, db):
    alice, bob = api.register(), api.register()
    conversation = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    sent = [
        api.post(f"/conversations/{conversation}/messages", alice, json={"content": f"m{i}"}).json
        for i in range(3)
    ]
    index(sent[-1]["id"])
    index(sent[-1]["id"])
    unread = "SELECT user_id, unread_count FROM direct_conversation_participants ORDER BY user_id"
    assert db.execute(unread).fetchall() == [(alice.id, 0), (bob.id, 3)]


def test_a_message_that_is_gone_is_nothing_to_do(db):
    assert index(123456) is False
