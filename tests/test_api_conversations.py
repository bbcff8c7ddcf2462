"""Direct messages through the HTTP stack: find-or-create on the ordered
pair, only the two participants, blocked conversations refuse messages."""

from __future__ import annotations


def test_find_or_create_returns_the_same_conversation_from_either_side(api, db):
    alice, bob = api.register(), api.register()
    created = api.post("/conversations", bob, json={"user_id": alice.id})
    assert created.status_code == 201
    assert created.json["participant_ids"] == sorted([alice.id, bob.id])
    found = api.post("/conversations", alice, json={"user_id": bob.id})
    assert (found.status_code, found.json["id"]) == (200, created.json["id"])
    assert db.execute("SELECT count(*) FROM direct_conversation_participants").fetchone() == (2,)


def test_dm_with_yourself_or_nobody_is_refused(api):
    alice = api.register()
    assert api.post("/conversations", alice, json={"user_id": alice.id}).status_code == 422
    assert api.post("/conversations", alice, json={"user_id": 424242}).status_code == 404


def test_only_the_two_participants_read_and_write(api, db):
    alice, bob, eve = api.register(), api.register(), api.register()
    conversation = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    sent = api.post(f"/conversations/{conversation}/messages", alice, json={"content": "psst"})
    assert sent.status_code == 201
    assert sent.json["conversation_id"] == conversation
    assert sent.json["room_id"] is None
    listed = api.get(f"/conversations/{conversation}/messages", bob).json["messages"]
    assert [m["content"] for m in listed] == ["psst"]
    message_id = sent.json["id"]
    for response in (
        api.get(f"/conversations/{conversation}/messages", eve),
        api.post(f"/conversations/{conversation}/messages", eve, json={"content": "hi"}),
        api.post(f"/messages/{message_id}/reactions", eve, json={"emoji": "👍"}),
        api.delete(f"/messages/{message_id}", eve),
    ):
        assert response.status_code == 404
    assert api.delete(f"/messages/{message_id}", bob).status_code == 403
    assert db.execute("SELECT message_count FROM direct_conversations").fetchone() == (1,)


def test_a_blocked_conversation_refuses_messages(api, db):
    alice, bob = api.register(), api.register()
    conversation = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    db.execute("UPDATE direct_conversations SET is_blocked = true, blocked_by = %s", (bob.id,))
    response = api.post(f"/conversations/{conversation}/messages", alice, json={"content": "hi"})
    assert response.status_code == 403
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


def test_racing_clients_get_one_conversation(app, api, db):
    from concurrent.futures import ThreadPoolExecutor

    from tests.api_helpers import ApiClient

    alice, bob = api.register(), api.register()
    pairs = [(alice, bob.id), (bob, alice.id)] * 4

    def open_dm(pair):
        user, other = pair
        return ApiClient(app.test_client()).post("/conversations", user, json={"user_id": other})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(open_dm, pairs))
    assert {r.status_code for r in responses} <= {200, 201}
    assert len({r.json["id"] for r in responses}) == 1
    assert db.execute("SELECT count(*) FROM direct_conversations").fetchone() == (1,)


def test_a_blocked_conversation_refuses_edits_and_reactions(api, db):
    alice, bob = api.register(), api.register()
    conversation = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    message = api.post(
        f"/conversations/{conversation}/messages", alice, json={"content": "before"}
    ).json
    db.execute("UPDATE direct_conversations SET is_blocked = true, blocked_by = %s", (bob.id,))
    assert (
        api.patch(f"/messages/{message['id']}", alice, json={"content": "after"}).status_code == 403
    )
    assert (
        api.post(f"/messages/{message['id']}/reactions", alice, json={"emoji": "👍"}).status_code
        == 403
    )
    assert db.execute("SELECT content, is_edited, reaction_count FROM messages").fetchone() == (
        "before",
        False,
        0,
    )


def test_html_direct_messages_are_sanitised_and_their_reactions_are_emoji(api, db):
    alice, bob = api.register(), api.register()
    conversation = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    raw = '<b>hey</b><img src=x onerror=alert(1)><a href="https://example.com">x</a>'
    sent = api.post(
        f"/conversations/{conversation}/messages",
        alice,
        json={"content": raw, "content_type": "html"},
    ).json
    clean = '<b>hey</b><a href="https://example.com" rel="nofollow noopener">x</a>'
    assert (sent["content"], sent["raw_content"]) == (clean, raw)
    edited = api.patch(
        f"/messages/{sent['id']}", alice, json={"content": "<u>hi</u><iframe src=//evil>"}
    ).json
    assert edited["content"] == "<u>hi</u>"
    assert db.execute("SELECT content, raw_content FROM messages").fetchone() == (
        "<u>hi</u>",
        "<u>hi</u><iframe src=//evil>",
    )
    path = f"/messages/{sent['id']}/reactions"
    assert api.post(path, bob, json={"emoji": "<b>"}).status_code == 422
    assert list(api.post(path, bob, json={"emoji": ":heart:"}).json["reactions"]) == ["❤️"]
