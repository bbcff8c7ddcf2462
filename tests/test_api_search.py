"""Message search through the HTTP stack, after the real messages.index
(run here): each message stemmed in its own language, only what the caller
may see, ranked with safe snippets, filters and cursor pages."""

from __future__ import annotations

from tests.api_helpers import error_code
from tests.test_api_enrichment import indexed


def said(api, room, user, content: str) -> int:
    message = api.say(room, user, content)
    indexed(message["id"])
    return message["id"]


def found(api, user, query: str) -> list[int]:
    answer = api.get(f"/search/messages?{query}", user)
    assert answer.status_code == 200, answer.json
    return [hit["message"]["id"] for hit in answer.json["results"]]


def test_each_message_is_found_in_its_own_language_and_only_by_who_may_see_it(api, db):
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    english = said(api, room, bob, "The runners were running through the park this morning.")
    french = said(api, room, bob, "Les coureurs courent dans le parc tous les matins, vraiment.")
    other = said(api, room, alice, "Nothing to see here about anything else at all.")
    secret_room = api.room(bob, name="secret", is_public=False)
    secret = said(api, secret_room, bob, "Secret runners run at night, nobody knows why.")
    deleted = said(api, room, bob, "A deleted message about running shoes and more.")
    assert api.delete(f"/messages/{deleted}", bob).status_code in (200, 204)

    assert found(api, alice, "q=run") == [english]  # stemmed: run, runners, running
    assert found(api, alice, "q=matin") == [french]  # stemmed in French: matins, matin
    assert set(found(api, bob, "q=run")) == {english, secret}
    assert found(api, alice, "q=parc OR park") in ([english, french], [french, english])
    assert other not in found(api, alice, "q=run")
    # The seed's own index stays, for whoever queries it as the seed wrote it.
    assert db.execute(
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_messages_search'"
    ).fetchone() == (1,)


def test_snippets_are_escaped_and_marked_and_filters_and_pages_narrow(api):
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    other_room = api.room(alice, name="other")
    hostile = said(api, room, bob, "<script>alert(1)</script> the deployment failed again today")
    mine = [
        said(api, room, alice, f"deployment number {n} went well for everyone") for n in range(3)
    ]
    elsewhere = said(api, other_room, alice, "another deployment in another room entirely")

    answer = api.get("/search/messages?q=deployment&author_id=" + str(bob.id), alice).json
    assert [hit["message"]["id"] for hit in answer["results"]] == [hostile]
    snippet = answer["results"][0]["snippet"]
    assert "<script>" not in snippet
    assert "&lt;/script&gt;" in snippet  # what was sent, as text
    assert "<mark>deployment</mark>" in snippet

    assert set(found(api, alice, f"q=deployment&room_id={other_room}")) == {elsewhere}
    pages, cursor = [], None
    while True:
        query = f"q=deployment&room_id={room}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        answer = api.get(f"/search/messages?{query}", alice).json
        pages.append([hit["message"]["id"] for hit in answer["results"]])
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [2, 2]
    assert sorted(hit for page in pages for hit in page) == sorted([hostile, *mine])

    for bad in ("q=", "q=x&limit=0", "q=x&cursor=nan_1", "q=x&before=yesterday"):
        response = api.get(f"/search/messages?{bad}", alice)
        assert (response.status_code, error_code(response)) == (422, "validation_failed"), bad
