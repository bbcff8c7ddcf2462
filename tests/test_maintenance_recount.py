"""maintenance.recount_counters: the counters messages.index keeps, set right
from scratch when its work was lost."""

from __future__ import annotations

import threading

import psycopg

from tests.factories import make_room, make_user, post, scalar
from tests.maintenance_helpers import counter_mismatches, index_members, last_seen_behind, run_task

RECOUNT = "maintenance.recount_counters"
MEMBERS = 1500  # several batches of the keyset (the first is 500 rows)


def chat_history(db) -> dict[str, int]:
    """A room of MEMBERS members (a few of them posting), two more rooms,
    three DMs with read markers, some deleted messages; every counter right
    (set here with plain SQL, as messages.index would have left them).
    Returns a few rows' ids, to corrupt."""
    users = [make_user(db, f"user{i}") for i in range(6)]
    rooms = [make_room(db, users[0], f"room{i}") for i in range(3)]
    for i, room in enumerate(rooms):
        for j, user in enumerate(users):
            for _ in range((i + j) % 4):
                post(db, user, room)
    db.execute(
        "INSERT INTO users (username, email, password_hash)"
        " SELECT 'quiet' || g, 'quiet' || g || '@example.com', 'x'"
        " FROM generate_series(1, %s) g",
        (MEMBERS,),
    )
    db.execute(
        "INSERT INTO room_members (room_id, user_id) SELECT %s, id FROM users"
        " WHERE username LIKE 'quiet%%'",
        (rooms[0],),
    )
    for a, b in ((users[0], users[1]), (users[2], users[3]), (users[4], users[5])):
        conversation = db.execute(
            "INSERT INTO direct_conversations (participant_ids)"
            " VALUES (ARRAY[%s, %s]) RETURNING id",
            (a, b),
        ).fetchone()[0]
        db.execute(
            "INSERT INTO direct_conversation_participants (conversation_id, user_id)"
            " VALUES (%s, %s), (%s, %s)",
            (conversation, a, conversation, b),
        )
        sent = [post(db, author, conversation=conversation)[0] for author in (a, b, a, a, b)]
        db.execute(
            "UPDATE direct_conversation_participants SET last_read_message_id = %s"
            " WHERE conversation_id = %s AND user_id = %s",
            (sent[1], conversation, b),
        )
    db.execute("UPDATE messages SET is_deleted = true WHERE id % 5 = 0")
    index_members(db)
    db.execute(
        "UPDATE direct_conversation_participants p SET unread_count = (SELECT count(*) FROM messages m"
        " WHERE m.conversation_id = p.conversation_id AND m.author_id <> p.user_id AND NOT m.is_deleted"
        "  AND m.id > COALESCE(p.last_read_message_id, 0))"
    )
    db.execute(
        "UPDATE users u SET last_seen_at = (SELECT max(created_at) FROM messages WHERE author_id = u.id)"
    )
    # Seen since (a login, say): later than any message, and must stay so.
    db.execute(
        "UPDATE users SET last_seen_at = now() + interval '1 hour' WHERE id = %s", (users[5],)
    )
    assert counter_mismatches(db) == []
    assert last_seen_behind(db) == []
    return {
        "first_member": scalar(db, "SELECT min(id) FROM room_members"),
        "last_member": scalar(db, "SELECT max(id) FROM room_members"),
        "poster": scalar(db, "SELECT id FROM room_members WHERE message_count > 1 LIMIT 1"),
        "reader": scalar(
            db,
            "SELECT id FROM direct_conversation_participants"
            " WHERE last_read_message_id IS NOT NULL LIMIT 1",
        ),
        "author": users[0],
        "seen_later": users[5],
    }


def corrupt(db, rows: dict[str, int]) -> dict[str, int]:
    """What lost messages.index work leaves behind, in a few rows; returns
    how many rows of each counter are now wrong."""
    db.execute(
        "UPDATE room_members SET message_count = message_count + 3 WHERE id IN (%s, %s)",
        (rows["first_member"], rows["last_member"]),
    )
    db.execute("UPDATE room_members SET message_count = 0 WHERE id = %s", (rows["poster"],))
    db.execute(
        "UPDATE direct_conversation_participants SET unread_count = unread_count + 2 WHERE id = %s",
        (rows["reader"],),
    )
    db.execute("UPDATE users SET last_seen_at = NULL WHERE id = %s", (rows["author"],))
    return {"member_counts_fixed": 3, "unread_counts_fixed": 1, "last_seen_fixed": 1}


def counters(db) -> list[tuple]:
    return db.execute(
        "SELECT 'member', id, message_count::text FROM room_members"
        " UNION ALL SELECT 'unread', id, unread_count::text FROM direct_conversation_participants"
        " UNION ALL SELECT 'seen', id, last_seen_at::text FROM users ORDER BY 1, 2"
    ).fetchall()


def test_the_recount_fixes_exactly_the_counters_that_were_wrong(mdb):
    db = mdb
    rows = chat_history(db)
    seen_later = scalar(db, "SELECT last_seen_at FROM users WHERE id = %s", (rows["seen_later"],))
    wrong = corrupt(db, rows)
    assert counter_mismatches(db) != []
    assert last_seen_behind(db) != []
    before = counters(db)

    dry = run_task(RECOUNT, dry_run=True)
    assert dry["counts"] == wrong
    assert counters(db) == before

    done = run_task(RECOUNT)
    assert done["counts"] == wrong
    assert counter_mismatches(db) == []
    assert last_seen_behind(db) == []
    # GREATEST: a last_seen_at later than every message is never lowered.
    assert (
        scalar(db, "SELECT last_seen_at FROM users WHERE id = %s", (rows["seen_later"],))
        == seen_later
    )

    again = run_task(RECOUNT)
    assert again["counts"] == dict.fromkeys(wrong, 0)


def test_a_row_held_by_a_chat_write_is_left_for_the_next_run(mdb):
    from db.engine import libpq_url

    db = mdb
    rows = chat_history(db)
    corrupt(db, rows)
    with psycopg.connect(libpq_url()) as chat:
        # A messages.index in flight holds the first member's row.
        chat.execute(
            "UPDATE room_members SET message_count = message_count WHERE id = %s",
            (rows["first_member"],),
        )
        # Only if the recount waited for that row would it ever be released
        # before the run ends; then the row would be fixed, and this fails.
        release = threading.Timer(30, chat.rollback)
        release.start()
        try:
            held = run_task(RECOUNT)
        finally:
            release.cancel()
        assert held["counts"]["member_counts_fixed"] == 2
        chat.rollback()
    held_key = db.execute(
        "SELECT room_id, user_id FROM room_members WHERE id = %s", (rows["first_member"],)
    ).fetchone()
    assert [m[:3] for m in counter_mismatches(db)] == [("member", *held_key)]
    assert run_task(RECOUNT)["counts"]["member_counts_fixed"] == 1
    assert counter_mismatches(db) == []
