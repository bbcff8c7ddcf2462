"""Messages through the HTTP stack: posting rules, mentions, pagination,
reactions, edits, deletes, pins, read markers, stats, retention, slow mode,
missing partitions and the outbox row every post owes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.api_helpers import error_code, write_attempts
from tests.factories import partitions_since


def test_posting_needs_membership(api):
    owner, bob = api.register(), api.register()
    room = api.room(owner)
    response = api.post(f"/rooms/{room}/messages", bob, json={"content": "hi"})
    assert response.status_code == 403
    api.join(room, bob)
    assert api.post(f"/rooms/{room}/messages", bob, json={"content": "hi"}).status_code == 201


def test_a_post_returns_the_message_and_owes_its_index_task_in_the_outbox(api, db):
    alice = api.register()
    room = api.room(alice)
    message = api.say(room, alice, "first!", content_type="markdown")
    assert message["author"] == {
        "id": alice.id,
        "username": alice.username,
        "display_name": None,
        "avatar_url": None,
    }
    assert (message["content"], message["content_type"], message["reactions"]) == (
        "first!",
        "markdown",
        {},
    )
    (row,) = db.execute("SELECT task_name, args FROM outbox").fetchall()
    assert row == ("messages.index", [message["id"]])


def test_mentions_of_existing_users_fill_mentions_and_message_mentions(api, db):
    alice, bob = api.register("alice"), api.register("bob_2")
    room = api.room(alice)
    message = api.say(room, alice, "hey @bob_2 and @ghost, mail me@bob_2.io")
    assert message["mentions"] == [bob.id]
    assert db.execute(
        "SELECT user_id FROM message_mentions WHERE message_id = %s", (message["id"],)
    ).fetchall() == [(bob.id,)]


def test_content_is_validated(api, db):
    alice = api.register()
    room = api.room(alice)
    for body in (
        {"content": ""},
        {"content": "   "},
        {"content": "x" * 4001},
        {"content": 5},
        {"content": "hi", "content_type": "pdf"},
        {},
    ):
        response = api.post(f"/rooms/{room}/messages", alice, json=body)
        assert response.status_code == 422, body
    malformed = api.post(
        f"/rooms/{room}/messages", alice, data="{", content_type="application/json"
    )
    assert malformed.status_code == 400
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


def test_a_json_body_over_its_limit_is_413(api, db):
    alice = api.register()
    room = api.room(alice)
    response = api.post(f"/rooms/{room}/messages", alice, json={"content": "x" * 70_000})
    assert response.status_code == 413
    assert set(response.json["error"]) == {"code", "message", "fields"}
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


def test_a_refused_write_leaves_no_row_and_enqueues_nothing(api, db):
    alice = api.register()
    room = api.room(alice)
    response = api.post(
        f"/rooms/{room}/messages", alice, json={"content": "reply", "parent_message_id": 12345}
    )
    assert response.status_code == 404
    assert db.execute(
        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM outbox)"
    ).fetchone() == (0, 0)


@pytest.fixture
def refused_at_commit(db):
    """A deferred constraint that fails at COMMIT for messages saying
    'refused at commit': the request fails after its message and outbox rows
    were both written."""
    db.execute("""
        CREATE FUNCTION refuse_at_commit() RETURNS trigger AS $$
        BEGIN
            IF NEW.content = 'refused at commit' THEN
                RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON messages
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();
    """)
    yield
    db.execute("DROP TRIGGER refuse_at_commit ON messages; DROP FUNCTION refuse_at_commit()")


def test_a_write_that_fails_at_commit_leaves_neither_message_nor_outbox_row(
    api, db, refused_at_commit
):
    alice = api.register()
    room = api.room(alice)
    response = api.post(f"/rooms/{room}/messages", alice, json={"content": "refused at commit"})
    assert response.status_code == 422
    assert db.execute(
        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM outbox)"
    ).fetchone() == (0, 0)
    assert api.post(f"/rooms/{room}/messages", alice, json={"content": "fine"}).status_code == 201


def test_cursor_pagination_newest_first(api):
    alice = api.register()
    room = api.room(alice)
    ids = [api.say(room, alice, f"m{i}")["id"] for i in range(5)]
    first = api.get(f"/rooms/{room}/messages?limit=2", alice).json
    assert [m["id"] for m in first["messages"]] == ids[:-3:-1]
    second = api.get(f"/rooms/{room}/messages?limit=2&before={first['next_before']}", alice).json
    assert [m["id"] for m in second["messages"]] == [ids[2], ids[1]]
    last = api.get(f"/rooms/{room}/messages?limit=2&before={second['next_before']}", alice).json
    assert ([m["id"] for m in last["messages"]], last["next_before"]) == ([ids[0]], None)
    exact = api.get(f"/rooms/{room}/messages?limit=5", alice).json
    assert (len(exact["messages"]), exact["next_before"]) == (5, None)
    assert api.get(f"/rooms/{room}/messages?limit=0", alice).status_code == 422
    assert api.get(f"/rooms/{room}/messages?before=abc", alice).status_code == 422


def test_a_reply_makes_a_thread_within_the_same_room_only(api):
    alice = api.register()
    room, other_room = api.room(alice), api.room(alice)
    parent = api.say(room, alice, "question")
    reply = api.say(room, alice, "answer", parent_message_id=parent["id"])
    assert reply["parent_message_id"] == parent["id"]
    listed = {m["id"]: m for m in api.get(f"/rooms/{room}/messages", alice).json["messages"]}
    assert (listed[parent["id"]]["thread_count"], listed[parent["id"]]["is_thread_root"]) == (
        1,
        True,
    )
    elsewhere = api.post(
        f"/rooms/{other_room}/messages",
        alice,
        json={"content": "x", "parent_message_id": parent["id"]},
    )
    assert elsewhere.status_code == 404


def test_reactions_are_aggregated_per_emoji_with_the_viewers_own_flag(api):
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    message = api.say(room, alice)
    assert (
        api.post(f"/messages/{message['id']}/reactions", alice, json={"emoji": "👍"}).status_code
        == 201
    )
    response = api.post(f"/messages/{message['id']}/reactions", bob, json={"emoji": "👍"})
    assert response.json["reactions"]["👍"]["count"] == 2
    api.post(f"/messages/{message['id']}/reactions", bob, json={"emoji": "🚀"})
    seen_by_alice = api.get(f"/rooms/{room}/messages", alice).json["messages"][0]
    assert seen_by_alice["reactions"] == {
        "👍": {
            "count": 2,
            "has_user_reacted": True,
            "users": [
                {"user_id": alice.id, "username": alice.username},
                {"user_id": bob.id, "username": bob.username},
            ],
        },
        "🚀": {
            "count": 1,
            "has_user_reacted": False,
            "users": [{"user_id": bob.id, "username": bob.username}],
        },
    }
    assert seen_by_alice["reaction_count"] == 3


def test_a_duplicate_reaction_is_409_and_unreacting_removes_it(api):
    alice = api.register()
    room = api.room(alice)
    message = api.say(room, alice)
    path = f"/messages/{message['id']}/reactions"
    api.post(path, alice, json={"emoji": "🎉"})
    duplicate = api.post(path, alice, json={"emoji": "🎉"})
    assert duplicate.status_code == 409
    assert error_code(duplicate) == "already_reacted"
    assert api.delete(f"{path}/🎉", alice).status_code == 204
    assert api.delete(f"{path}/🎉", alice).status_code == 404
    assert api.get(f"/rooms/{room}/messages", alice).json["messages"][0]["reactions"] == {}


def test_only_the_author_edits_and_an_edit_is_recorded(api):
    alice, bob = api.register(), api.register("bob")
    room = api.room(alice)
    api.join(room, bob)
    message = api.say(room, alice, "helo")
    assert api.patch(f"/messages/{message['id']}", bob, json={"content": "x"}).status_code == 403
    edited = api.patch(f"/messages/{message['id']}", alice, json={"content": "hello @bob"}).json
    assert (edited["content"], edited["is_edited"], edited["edit_count"]) == ("hello @bob", True, 1)
    assert edited["edited_at"] is not None
    assert edited["mentions"] == [bob.id]


def test_deletes_by_author_or_moderator_and_moderator_deletes_are_audited(api, db):
    alice, bob, mod = api.register(), api.register(), api.register()
    room = api.room(alice)
    for user in (bob, mod):
        api.join(room, user)
    api.patch(f"/rooms/{room}/members/{mod.id}", alice, json={"role": "moderator"})
    own, other = api.say(room, bob, "mine"), api.say(room, alice, "alice's")
    assert api.delete(f"/messages/{other['id']}", bob).status_code == 403
    assert api.delete(f"/messages/{own['id']}", bob).status_code == 204
    assert api.delete(f"/messages/{other['id']}", mod).status_code == 204
    assert api.get(f"/rooms/{room}/messages", alice).json["messages"] == []
    assert api.patch(f"/messages/{own['id']}", bob, json={"content": "x"}).status_code == 404
    events = db.execute(
        "SELECT user_id, event_data FROM audit_logs "
        "WHERE event_type = 'message_deleted_by_moderator'"
    ).fetchall()
    assert events == [(mod.id, {"message_id": other["id"], "author_id": alice.id})]
    assert db.execute("SELECT message_count FROM rooms").fetchone() == (0,)


def test_moderators_pin_and_unpin(api):
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    message = api.say(room, bob)
    assert api.post(f"/messages/{message['id']}/pin", bob).status_code == 403
    assert api.post(f"/messages/{message['id']}/pin", alice).json["is_pinned"] is True
    assert api.delete(f"/messages/{message['id']}/pin", alice).json["is_pinned"] is False


def test_messages_of_a_hidden_room_are_404_not_403(api):
    alice, eve = api.register(), api.register()
    room = api.room(alice, is_public=False)
    message = api.say(room, alice)
    for response in (
        api.patch(f"/messages/{message['id']}", eve, json={"content": "x"}),
        api.delete(f"/messages/{message['id']}", eve),
        api.post(f"/messages/{message['id']}/pin", eve),
        api.post(f"/messages/{message['id']}/reactions", eve, json={"emoji": "👍"}),
    ):
        assert response.status_code == 404


def test_read_marker_and_unread_count(api):
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    ids = [api.say(room, alice, f"m{i}")["id"] for i in range(3)]
    assert api.get(f"/rooms/{room}/unread", bob).json == {"room_id": room, "unread_count": 3}
    marked = api.post(f"/rooms/{room}/read", bob, json={"message_id": ids[1]})
    assert marked.json["unread_count"] == 1
    # A late, older marker does not move the reader backwards.
    api.post(f"/rooms/{room}/read", bob, json={"message_id": ids[0]})
    assert api.get(f"/rooms/{room}/unread", bob).json["unread_count"] == 1


def test_stats_are_those_of_the_last_maintenance_refresh(api, db):
    from tests.maintenance_helpers import run_task

    alice = api.register()
    room = api.room(alice)
    api.say(room, alice)
    # Before the first refresh: the room's exact message count, zero windows.
    stats = api.get(f"/rooms/{room}/stats", alice).json
    assert (stats["total_messages"], stats["messages_24h"], stats["active_users_24h"]) == (1, 0, 0)
    api.say(room, alice)
    run_task("maintenance.refresh_room_stats")
    api.say(room, alice)  # after the refresh: not counted until the next one
    stats = api.get(f"/rooms/{room}/stats", alice).json
    assert (stats["total_messages"], stats["messages_24h"], stats["active_users_24h"]) == (2, 2, 1)
    # The seed's room_stats, as anyone queries it, says the same.
    seed_view = db.execute(
        "SELECT total_messages, messages_24h, active_users_24h FROM room_stats WHERE room_id = %s",
        (room,),
    ).fetchone()
    assert seed_view == (2, 2, 1)


def test_slow_mode_answers_429_with_retry_after(api):
    owner, bob = api.register(), api.register()
    room = api.room(owner, slow_mode_seconds=60)
    api.join(room, bob)
    api.say(room, bob, "one")
    response = api.post(f"/rooms/{room}/messages", bob, json={"content": "two"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    api.say(room, owner, "owners are not slowed")
    api.say(room, owner, "owners are not slowed")


def test_messages_older_than_retention_are_hidden(api, db):
    alice = api.register()
    room = api.room(alice, message_retention_days=7)
    fresh = api.say(room, alice, "fresh")
    old = api.say(room, alice, "old")
    partitions_since(db, "8 days")
    db.execute(
        "UPDATE messages SET created_at = now() - interval '8 days' WHERE id = %s", (old["id"],)
    )
    shown = api.get(f"/rooms/{room}/messages", alice).json["messages"]
    assert [m["id"] for m in shown] == [fresh["id"]]
    assert api.post(f"/messages/{old['id']}/pin", alice).status_code == 404


def test_a_month_without_a_partition_is_created_and_the_post_succeeds(api, db):
    alice = api.register()
    room = api.room(alice)
    month = datetime.now(UTC)
    partition = f"messages_y{month.year:04d}m{month.month:02d}"
    db.execute(f"ALTER TABLE messages DETACH PARTITION {partition}")
    db.execute(f"DROP TABLE {partition}")
    message = api.say(room, alice, "still works")
    assert db.execute("SELECT to_regclass(%s) IS NOT NULL", (partition,)).fetchone() == (True,)
    assert db.execute(
        "SELECT count(*) FROM messages WHERE id = %s", (message["id"],)
    ).fetchone() == (1,)


def test_huge_or_malformed_ids_are_404(api):
    alice = api.register()
    for path in (
        "/rooms/99999999999/messages",
        "/rooms/0/messages",
        "/rooms/-1/messages",
        "/rooms/2147483648",
        "/files/not-a-uuid",
    ):
        assert api.get(path, alice).status_code == 404, path


def test_reaction_count_stays_exact_when_a_user_who_reacted_is_deleted(api, db):
    alice, bob, carol = api.register(), api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    api.join(room, carol)
    message = api.say(room, alice)
    for user, emoji in ((bob, "👍"), (bob, "🚀"), (carol, "👍")):
        assert (
            api.post(
                f"/messages/{message['id']}/reactions", user, json={"emoji": emoji}
            ).status_code
            == 201
        )
    assert api.delete(f"/messages/{message['id']}/reactions/🚀", bob).status_code == 204
    db.execute("DELETE FROM users WHERE id = %s", (bob.id,))  # the account is erased
    seen = api.get(f"/rooms/{room}/messages", alice).json["messages"][0]
    recount = db.execute(
        "SELECT count(*) FROM reactions WHERE message_id = %s", (message["id"],)
    ).fetchone()[0]
    assert seen["reaction_count"] == recount == 1
    assert seen["reactions"] == {
        "👍": {
            "count": 1,
            "has_user_reacted": False,
            "users": [{"user_id": carol.id, "username": carol.username}],
        }
    }


# ------------------------------------------------ muted, sanitised, emoji


def test_a_muted_member_posts_edits_reacts_and_uploads_nothing(api, db):
    owner, bob = api.register(), api.register()
    room = api.room(owner)
    api.join(room, bob)
    old = api.say(room, bob, "before the mute")
    path = f"/messages/{old['id']}/reactions"
    assert api.post(path, bob, json={"emoji": "👍"}).status_code == 201
    api.patch(f"/rooms/{room}/members/{bob.id}", owner, json={"is_muted": True})
    # The finding: a muted member could still edit old messages and react.
    writes = write_attempts(api, bob, room, old["id"])
    writes["unreact"] = api.delete(f"{path}/👍", bob).status_code
    assert writes == dict.fromkeys(writes, 403)
    assert db.execute("SELECT content FROM messages").fetchall() == [("before the mute",)]
    assert db.execute("SELECT emoji FROM reactions").fetchall() == [("👍",)]
    assert db.execute("SELECT count(*) FROM files").fetchone() == (0,)
    api.patch(f"/rooms/{room}/members/{bob.id}", owner, json={"is_muted": False})
    assert api.patch(f"/messages/{old['id']}", bob, json={"content": "edited"}).status_code == 200


XSS = (
    '<p onclick="steal()">Hi <b>all</b> <img src=x onerror=alert(1)>'
    '<a href="https://example.com" target="_blank">site</a> '
    '<a href="javascript:alert(2)">js</a><script>alert(3)</script></p>'
)
SANITISED = (
    "<p>Hi <b>all</b> "
    '<a href="https://example.com" rel="nofollow noopener">site</a> '
    '<a rel="nofollow noopener">js</a></p>'
)


def test_html_content_is_sanitised_on_post_and_edit_and_raw_content_keeps_what_was_sent(api):
    alice = api.register()
    room = api.room(alice)
    posted = api.say(room, alice, XSS, content_type="html")
    assert (posted["content"], posted["raw_content"]) == (SANITISED, XSS)
    listed = api.get(f"/rooms/{room}/messages", alice).json["messages"][0]
    assert (listed["content"], listed["raw_content"]) == (SANITISED, XSS)
    edited = api.patch(
        f"/messages/{posted['id']}", alice, json={"content": "<i>x</i><svg/onload=1>"}
    ).json
    assert (edited["content"], edited["raw_content"]) == ("<i>x</i>", "<i>x</i><svg/onload=1>")
    # Other content types are not HTML: stored as sent, for the client to escape.
    text = api.say(room, alice, "<b>1 < 2</b>")
    assert text["content"] == text["raw_content"] == "<b>1 < 2</b>"


def test_html_with_nothing_left_once_sanitised_is_422(api, db):
    alice = api.register()
    room = api.room(alice)
    for content in ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>"):
        response = api.post(
            f"/rooms/{room}/messages", alice, json={"content": content, "content_type": "html"}
        )
        assert response.status_code == 422
        assert "content" in response.json["error"]["fields"]
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("👍", "👍"),
        (":thumbs_up:", "👍"),
        (":+1:", "👍"),
        ("❤", "❤️"),  # unqualified: stored fully qualified
        ("👍🏽", "👍🏽"),  # a skin tone
        ("👩‍💻", "👩‍💻"),  # a ZWJ sequence
        ("👨‍👩‍👧‍👦", "👨‍👩‍👧‍👦"),
        ("🇫🇷", "🇫🇷"),  # a flag
        ("🏴󠁧󠁢󠁥󠁮󠁧󠁿", "🏴󠁧󠁢󠁥󠁮󠁧󠁿"),  # a subdivision flag (tag sequence)
        ("1️⃣", "1️⃣"),  # a keycap
        (":keycap_1:", "1️⃣"),
    ],
)
def test_emoji_are_taken_as_shortcodes_or_unicode_sequences_and_stored_fully_qualified(
    api, db, sent, stored
):
    alice = api.register()
    room = api.room(alice)
    message = api.say(room, alice)
    response = api.post(f"/messages/{message['id']}/reactions", alice, json={"emoji": sent})
    assert response.status_code == 201
    assert list(response.json["reactions"]) == [stored]
    assert db.execute("SELECT emoji FROM reactions").fetchall() == [(stored,)]
    # The same emoji in another form is the same reaction, and removes it.
    again = api.post(f"/messages/{message['id']}/reactions", alice, json={"emoji": stored})
    assert error_code(again) == "already_reacted"
    assert api.delete(f"/messages/{message['id']}/reactions/{sent}", alice).status_code == 204


@pytest.mark.parametrize(
    "emoji", ["x", "lol", "👍👍", "🏽", ":nope:", ":thumbs_up", "a👍", " 👍", "😀" * 21]
)
def test_anything_but_one_emoji_is_422_on_the_emoji_field(api, db, emoji):
    alice = api.register()
    room = api.room(alice)
    message = api.say(room, alice)
    response = api.post(f"/messages/{message['id']}/reactions", alice, json={"emoji": emoji})
    assert response.status_code == 422
    assert "emoji" in response.json["error"]["fields"]
    assert db.execute("SELECT count(*) FROM reactions").fetchone() == (0,)


def test_one_user_puts_at_most_the_cap_of_reactions_on_one_message(api, db):
    # The finding: one user added 300 distinct reactions to one message.
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    message = api.say(room, alice)
    path = f"/messages/{message['id']}/reactions"
    faces = [chr(code) for code in range(0x1F600, 0x1F600 + 21)]  # 😀 onwards
    for face in faces[:20]:
        assert api.post(path, alice, json={"emoji": face}).status_code == 201
    refused = api.post(path, alice, json={"emoji": faces[20]})
    assert (refused.status_code, error_code(refused)) == (409, "reaction_limit")
    assert refused.json["error"]["fields"] == {"limit": 20}
    # The cap is per user: others still react; removing one makes room.
    assert api.post(path, bob, json={"emoji": faces[20]}).status_code == 201
    assert api.delete(f"{path}/{faces[0]}", alice).status_code == 204
    assert api.post(path, alice, json={"emoji": faces[20]}).status_code == 201
    assert db.execute(
        "SELECT user_id, count(*) FROM reactions GROUP BY user_id ORDER BY user_id"
    ).fetchall() == [(alice.id, 20), (bob.id, 1)]


# ------------------------------------------------------------ one 404


def test_every_not_visible_answer_is_the_same_404_body(api, db):
    alice, bob, eve = api.register(), api.register(), api.register()
    public, private = api.room(alice), api.room(alice, is_public=False)
    secret = api.say(private, alice, "secret")
    deleted = api.say(public, alice, "gone")
    api.delete(f"/messages/{deleted['id']}", alice)
    dm = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    whisper = api.post(f"/conversations/{dm}/messages", alice, json={"content": "psst"}).json
    missing = 2_000_000_000
    answers = {
        "missing room": api.get(f"/rooms/{missing}", eve),
        "private room": api.get(f"/rooms/{private}", eve),
        "private room's messages": api.get(f"/rooms/{private}/messages", eve),
        "missing message": api.patch(f"/messages/{missing}", eve, json={"content": "x"}),
        "private message": api.patch(f"/messages/{secret['id']}", eve, json={"content": "x"}),
        "private message's pin": api.post(f"/messages/{secret['id']}/pin", eve),
        "deleted message": api.post(f"/messages/{deleted['id']}/pin", alice),
        "foreign conversation": api.get(f"/conversations/{dm}/messages", eve),
        "missing conversation": api.get(f"/conversations/{missing}/messages", eve),
        "foreign direct message": api.delete(f"/messages/{whisper['id']}", eve),
        "missing user": api.post(f"/rooms/{public}/members", alice, json={"user_id": missing}),
        "missing member": api.delete(f"/rooms/{public}/members/{missing}", alice),
        "missing reaction": api.delete(f"/messages/{secret['id']}/reactions/👍", alice),
        "missing file": api.get("/files/6f1d3c8e-2a4b-4c5d-9e6f-7a8b9c0d1e2f", eve),
        "out-of-range id": api.get("/rooms/99999999999", eve),
        "unknown path": api.get("/nothing/here", eve),
    }
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 404)
    bodies = {r.get_data() for r in answers.values()}
    assert bodies == {b'{"error":{"code":"not_found","message":"Not found.","fields":{}}}\n'}
