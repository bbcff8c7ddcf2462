"""A message's enrichment through the HTTP stack and the real messages.index
task (run here, as a worker runs it): the seed's example message, rendering
that neither runs nor loses what was sent, language on the prose alone,
mentions and links only of what can be seen, edits enriched again."""

from __future__ import annotations

SEED_EXAMPLE = (
    "Salut @{name} ! Voici le code que tu cherchais :\n"
    '```rust\nfn hello() {{\n    println!("Hello, world!");\n}}\n```'
)


def indexed(message_id: int) -> None:
    """messages.index, as a worker runs it after the post's outbox row."""
    from worker import app

    app.loader.import_default_modules()
    result = app.tasks["messages.index"].apply(args=[message_id])
    assert result.successful(), result.result


def fetched(api, user, message: dict) -> dict:
    path = (
        f"/rooms/{message['room_id']}/messages"
        if message["room_id"]
        else f"/conversations/{message['conversation_id']}/messages"
    )
    found = [m for m in api.get(path, user).json["messages"] if m["id"] == message["id"]]
    assert found, message
    return found[0]


def test_the_seed_s_example_message_comes_back_enriched(api):
    john, jane = api.register(), api.register()
    room = api.room(john)
    api.join(room, jane)
    content = SEED_EXAMPLE.format(name=jane.username)
    posted = api.post(
        f"/rooms/{room}/messages",
        john,
        json={"content": content, "content_type": "markdown"},
        headers={"X-Veza-Client": "web/1.0.0"},
    )
    assert posted.status_code == 201
    message = posted.json
    # Readable at once; its enrichment is pending until the task runs.
    assert (message["enrichment"], message["rendered_html"]) == ("pending", None)
    assert message["content"] == message["raw_content"] == content
    assert message["mentions"] == [jane.id]
    assert message["metadata"] == {"client": "web", "version": "1.0.0"}

    indexed(message["id"])
    enriched = fetched(api, jane, message)
    assert enriched["enrichment"] == "done"
    assert enriched["metadata"] == {
        "client": "web",
        "version": "1.0.0",
        "language_detected": "fr",
        "code_snippets": ["rust"],
    }
    assert enriched["content"] == enriched["raw_content"] == content
    assert "<pre><code>fn hello()" in enriched["rendered_html"]
    assert 'println!("Hello, world!");' in enriched["rendered_html"]


def test_rendering_keeps_markup_inert_and_links_safe(api):
    alice = api.register()
    room = api.room(alice)
    content = (
        "**Bold** move: <script>alert(1)</script> and [a link](https://example.com)"
        " and [bad](javascript:alert(2))\n\n```\nno language\n```\n```python\nprint(1)\n```"
    )
    message = api.say(room, alice, content, content_type="markdown")
    indexed(message["id"])
    enriched = fetched(api, alice, message)
    rendered = enriched["rendered_html"]
    assert "<strong>Bold</strong>" in rendered
    assert "<script>" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered  # what was sent, as text
    assert '<a href="https://example.com" rel="nofollow noopener">a link</a>' in rendered
    assert 'href="javascript:' not in rendered  # left as text, never a link
    assert enriched["metadata"]["code_snippets"] == ["python"]  # a block with no language: none

    code = api.say(room, alice, "<b>not markup</b>", content_type="code")
    indexed(code["id"])
    assert fetched(api, alice, code)["rendered_html"] == (
        "<pre><code>&lt;b&gt;not markup&lt;/b&gt;</code></pre>"
    )
    short = api.say(room, alice, "ok 👍")
    indexed(short["id"])
    assert fetched(api, alice, short)["metadata"]["language_detected"] is None


def test_mentions_and_links_only_of_what_can_be_seen(api):
    alice, bob, eve = api.register(), api.register(), api.register()
    private = api.room(alice, name="private", is_public=False)
    invited = api.post(f"/rooms/{private}/members", alice, json={"user_id": bob.id})
    assert invited.status_code == 201
    hidden = api.room(eve, name="eve's", is_public=False)
    secret = api.say(hidden, eve, "eve's secret")
    public = api.room(eve, name="public")
    known = api.say(public, eve, "public news")

    message = api.say(
        private,
        alice,
        f"@{bob.username} @{eve.username} see https://chat.example/messages/{known['id']}"
        f" and https://chat.example/messages/{secret['id']}",
    )
    assert message["mentions"] == [bob.id]  # eve is not in the room: not mentioned
    indexed(message["id"])
    assert fetched(api, bob, message)["referenced_message_ids"] == [known["id"]]

    conversation = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    direct = api.post(
        f"/conversations/{conversation}/messages",
        alice,
        json={"content": f"@{bob.username} and @{eve.username}"},
    )
    assert direct.json["mentions"] == [bob.id]


def test_an_edit_is_enriched_again(api, db):
    alice = api.register()
    room = api.room(alice)
    message = api.say(room, alice, "This message is written in plain English, clearly.")
    indexed(message["id"])
    assert fetched(api, alice, message)["metadata"]["language_detected"] == "en"

    edited = api.patch(
        f"/messages/{message['id']}",
        alice,
        json={"content": "Ce message est maintenant écrit en français, bien sûr."},
    )
    assert edited.status_code == 200
    assert edited.json["enrichment"] == "pending"
    owed = db.execute(
        "SELECT count(*) FROM outbox WHERE task_name = 'messages.index' AND args = %s::jsonb",
        (f"[{message['id']}]",),
    ).fetchone()[0]
    assert owed == 2  # the post's and the edit's
    indexed(message["id"])
    again = fetched(api, alice, message)
    assert (again["enrichment"], again["metadata"]["language_detected"]) == ("done", "fr")
