"""Read state and discovery through the HTTP stack: the rooms one may join
or is in, by last activity, in pages; one's DMs with their unread counts,
and a read marker that only moves forward; one's mention feed, only what
one may still see."""

from __future__ import annotations

from tests.api_helpers import error_code


def indexed(*message_ids: int) -> None:
    """What messages.index does after each post (here, in this process):
    the counters, a DM's unread counts among them."""
    from db.engine import session_scope
    from veza.messages.counters import index_messages

    with session_scope() as session:
        index_messages(session, message_ids)


def all_pages(api, user, path: str, key: str, limit: int) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        answer = api.get(path + query, user)
        assert answer.status_code == 200, answer.json
        pages.append([item["id"] for item in answer.json[key]])
        cursor = answer.json["next_cursor"]
        if cursor is None:
            return pages


def test_rooms_lists_public_rooms_and_mine_by_last_activity_in_pages(api, db):
    alice, bob = api.register(), api.register()
    quiet = api.room(alice, name="quiet")  # never written in: by its creation
    old = api.room(alice, name="old")
    secret = api.room(alice, name="secret", is_public=False)
    busy = api.room(alice, name="busy")
    bobs = api.room(bob, name="bobs", is_public=False)
    archived = api.room(alice, name="gone")
    db.execute("UPDATE rooms SET is_archived = true WHERE id = %s", (archived,))
    for room in (old, secret, busy):
        api.say(room, alice)
    api.say(bobs, bob)

    assert all_pages(api, alice, "/rooms", "rooms", limit=2) == [[busy, secret], [old, quiet]]
    pages = all_pages(api, bob, "/rooms", "rooms", limit=3)
    assert [room for page in pages for room in page] == [bobs, busy, old, quiet]

    api.say(old, alice)  # active again: first on the next listing
    assert all_pages(api, alice, "/rooms", "rooms", limit=10) == [[old, busy, secret, quiet]]
    bad = api.get("/rooms?cursor=yesterday", alice)
    assert (bad.status_code, error_code(bad)) == (422, "validation_failed")


def test_the_dm_inbox_counts_unread_and_a_read_marker_only_moves_forward(api):
    alice, bob, carol = api.register(), api.register(), api.register()
    with_bob = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    with_carol = api.post("/conversations", alice, json={"user_id": carol.id}).json["id"]
    sent = [
        api.post(f"/conversations/{with_bob}/messages", bob, json={"content": f"{n}"}).json["id"]
        for n in range(3)
    ]
    hello = api.post(f"/conversations/{with_carol}/messages", carol, json={"content": "hi"})
    indexed(*sent, hello.json["id"])

    inbox = api.get("/conversations", alice).json
    assert [c["id"] for c in inbox["conversations"]] == [with_carol, with_bob]
    unread = {c["id"]: c["unread_count"] for c in inbox["conversations"]}
    assert unread == {with_carol: 1, with_bob: 3}
    assert inbox["next_cursor"] is None
    assert {p["id"] for p in inbox["conversations"][1]["participants"]} == {alice.id, bob.id}

    marked = api.post(f"/conversations/{with_bob}/read", alice, json={"message_id": sent[1]})
    assert marked.status_code == 200
    assert marked.json == {"conversation_id": with_bob, "unread_count": 1}
    late = api.post(f"/conversations/{with_bob}/read", alice, json={"message_id": sent[0]})
    assert late.json["unread_count"] == 1  # an older marker arriving late changes nothing
    inbox = api.get("/conversations", alice).json["conversations"]
    assert {c["id"]: c["unread_count"] for c in inbox}[with_bob] == 1
    assert all_pages(api, alice, "/conversations", "conversations", limit=1) == [
        [with_carol],
        [with_bob],
    ]

    # Someone else's DM, or a message of another DM: not found, nothing marked.
    assert (
        api.post(f"/conversations/{with_bob}/read", carol, json={"message_id": sent[2]}).status_code
        == 404
    )
    other = api.post(
        f"/conversations/{with_bob}/read", alice, json={"message_id": hello.json["id"]}
    )
    assert other.status_code == 404


def test_the_mention_feed_shows_only_what_is_still_visible(api, db):
    alice, bob = api.register(), api.register()
    public = api.room(bob, name="public")
    private = api.room(bob, name="private", is_public=False)
    invited = api.post(f"/rooms/{private}/members", bob, json={"user_id": alice.id})
    assert invited.status_code == 201
    kept = api.say(public, bob, f"@{alice.username} look")["id"]
    left = api.say(private, bob, f"@{alice.username} secret")["id"]
    deleted = api.say(public, bob, f"@{alice.username} oops")["id"]
    api.say(public, bob, "nobody mentioned")
    conversation = api.post("/conversations", bob, json={"user_id": alice.id}).json["id"]
    direct = api.post(
        f"/conversations/{conversation}/messages", bob, json={"content": f"@{alice.username} dm"}
    ).json["id"]
    assert [m["id"] for m in api.get("/mentions", alice).json["messages"]] == [
        direct,
        deleted,
        left,
        kept,
    ]

    assert api.delete(f"/messages/{deleted}", bob).status_code in (200, 204)
    assert api.delete(f"/rooms/{private}/members/{alice.id}", alice).status_code in (200, 204)
    feed = api.get("/mentions?limit=2", alice).json
    assert [m["id"] for m in feed["messages"]] == [direct, kept]
    assert feed["next_before"] is None
    assert api.get("/mentions", bob).json["messages"] == []
