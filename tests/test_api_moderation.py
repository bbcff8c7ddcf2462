"""Moderation through the HTTP stack and the real messages.index task:
auto-moderation by a room's rules, reports up to the hold threshold, the
moderators' queue and decisions, who sees a held message, and what a held
message notifies (nothing, until approved)."""

from __future__ import annotations

import pytest

from tests.api_helpers import error_code
from tests.test_api_notifications import indexed, kinds


def rules(api, room: int, owner, **auto_moderate) -> None:
    changed = api.patch(
        f"/rooms/{room}", owner, json={"metadata": {"auto_moderate": auto_moderate}}
    )
    assert changed.status_code == 200, changed.json


def listed(api, room: int, user) -> list[int]:
    answer = api.get(f"/rooms/{room}/messages", user)
    assert answer.status_code == 200, answer.json
    return [m["id"] for m in answer.json["messages"]]


def promote(api, room: int, owner, user) -> None:
    changed = api.patch(f"/rooms/{room}/members/{user.id}", owner, json={"role": "moderator"})
    assert changed.status_code == 200, changed.json


def queue(api, room: int, user) -> list[int]:
    answer = api.get(f"/rooms/{room}/moderation/queue", user)
    assert answer.status_code == 200, answer.json
    return [m["id"] for m in answer.json["messages"]]


@pytest.fixture
def room_of_four(api):
    """A room: its owner, a moderator and two members."""
    owner, moderator, alice, bob = (api.register() for _ in range(4))
    room = api.room(owner)
    for user in (moderator, alice, bob):
        api.join(room, user)
    promote(api, room, owner, moderator)
    return room, owner, moderator, alice, bob


def test_a_blocked_term_holds_a_message_for_all_but_author_and_moderators(api, room_of_four):
    room, owner, moderator, alice, bob = room_of_four
    rules(api, room, owner, enabled=True, blocked_terms=["Spoiler"], action="hold")
    held = api.say(room, alice, f"@{bob.username} SPOILER: he dies")
    fine = api.say(room, alice, "no spoilers here")  # a whole word only
    indexed(held["id"], held["id"], fine["id"])  # twice: the same verdict

    assert listed(api, room, bob) == [fine["id"]]
    assert listed(api, room, alice) == [fine["id"], held["id"]]
    assert listed(api, room, moderator) == [fine["id"], held["id"]]
    mine = api.get(f"/rooms/{room}/messages", alice).json["messages"][1]
    assert (mine["moderation_status"], mine["is_flagged"]) == ("pending", True)
    assert mine["moderation_reason"] == "blocked term"
    assert (
        api.post(f"/messages/{held['id']}/reactions", bob, json={"emoji": "👍"}).status_code == 404
    )
    # Nobody was told of it, not even the one it mentions.
    assert held["id"] not in kinds(api, bob)
    assert api.get("/mentions", bob).json["messages"] == []
    assert queue(api, room, moderator) == [held["id"]]

    # An edit that drops the term lifts the system's hold.
    edited = api.patch(f"/messages/{held['id']}", alice, json={"content": "he lives"})
    assert edited.status_code == 200, edited.json
    indexed(held["id"])
    assert listed(api, room, bob) == [fine["id"], held["id"]]
    assert queue(api, room, moderator) == []


@pytest.mark.parametrize(
    ("action", "status", "visible"),
    [("flag", "flagged", True), ("hold", "pending", False), ("reject", "rejected", False)],
)
def test_a_link_is_flagged_held_or_rejected_by_the_rooms_action(
    api, room_of_four, action, status, visible
):
    room, owner, moderator, alice, bob = room_of_four
    rules(api, room, owner, enabled=True, block_links=True, action=action)
    linked = api.say(room, alice, "see https://example.com/x")
    indexed(linked["id"])
    assert (linked["id"] in listed(api, room, bob)) is visible
    seen = api.get(f"/rooms/{room}/messages", moderator).json["messages"][0]
    assert (seen["moderation_status"], seen["moderation_reason"]) == (status, "link")
    assert queue(api, room, moderator) == [linked["id"]]


def test_rules_left_disabled_change_nothing(api, room_of_four):
    room, owner, _, alice, bob = room_of_four
    rules(api, room, owner, enabled=False, blocked_terms=["spoiler"], max_mentions=0)
    said = api.say(room, alice, f"spoiler @{bob.username}")
    indexed(said["id"])
    assert listed(api, room, bob) == [said["id"]]


def test_three_reports_hide_a_message_and_an_approval_shows_and_notifies_it(api, db, room_of_four):
    room, _owner, moderator, alice, bob = room_of_four
    carol, dave = api.register(), api.register()
    for user in (carol, dave):
        api.join(room, user)
    said = api.say(room, alice, f"@{bob.username} buy cheap watches")
    indexed(said["id"])
    assert said["id"] in kinds(api, bob)

    for reporter in (bob, carol):
        made = api.post(f"/messages/{said['id']}/report", reporter, json={"reason": "spam"})
        assert made.status_code == 201, made.json
        assert made.json["message_id"] == said["id"]
        assert listed(api, room, dave) == [said["id"]]  # flagged, still shown
    again = api.post(f"/messages/{said['id']}/report", bob, json={"reason": "spam!"})
    assert (again.status_code, error_code(again)) == (409, "already_reported")
    assert queue(api, room, moderator) == [said["id"]]
    third = api.post(f"/messages/{said['id']}/report", dave, json={"reason": "spam"})
    assert third.status_code == 201, third.json

    assert listed(api, room, dave) == []
    assert listed(api, room, carol) == []
    assert said["id"] not in kinds(api, bob)  # its notification is hidden too
    held = api.get(f"/rooms/{room}/messages", alice).json["messages"][0]
    assert (held["moderation_status"], held["flag_count"]) == ("pending", 3)
    assert held["moderation_reason"] == "reports: 3"
    indexed(said["id"])  # a rerun keeps the hold
    assert listed(api, room, dave) == []

    approved = api.post(
        f"/messages/{said['id']}/moderation", moderator, json={"action": "approve", "reason": "ok"}
    )
    assert approved.status_code == 200, approved.json
    assert approved.json["moderation_status"] == "approved"
    assert approved.json["is_flagged"] is False
    assert queue(api, room, moderator) == []
    assert listed(api, room, dave) == [said["id"]]
    # The approval owes messages.index, which notifies whoever it missed.
    owed = db.execute(
        "SELECT count(*) FROM outbox WHERE task_name = 'messages.index' AND args->>0 = %s",
        (str(said["id"]),),
    ).fetchone()[0]
    assert owed == 2  # the post's, and the approval's
    indexed(said["id"])
    assert said["id"] in kinds(api, bob)
    assert said["id"] in kinds(api, carol)
    events = db.execute(
        "SELECT event_type, user_id FROM audit_logs"
        " WHERE resource_type = 'message' AND resource_id = %s ORDER BY id",
        (said["id"],),
    ).fetchall()
    assert events == [
        ("message_auto_moderated", None),  # approved -> flagged
        ("message_reported", bob.id),
        ("message_reported", carol.id),
        ("message_auto_moderated", None),  # flagged -> pending
        ("message_reported", dave.id),
        ("message_moderated", moderator.id),
    ]


def test_a_held_message_notifies_nobody_until_approved(api, room_of_four):
    room, owner, moderator, alice, bob = room_of_four
    rules(api, room, owner, enabled=True, max_mentions=0, action="hold")
    said = api.say(room, alice, f"@{bob.username} look")
    indexed(said["id"])
    assert kinds(api, bob) == {}
    approved = api.post(f"/messages/{said['id']}/moderation", moderator, json={"action": "approve"})
    assert approved.status_code == 200, approved.json
    indexed(said["id"])  # the approval's task; a human decision stands
    assert kinds(api, bob) == {said["id"]: "mention"}
    assert approved.json["moderation_status"] == "approved"


def test_a_rejection_is_final_and_hides_the_message(api, room_of_four):
    room, owner, _moderator, alice, bob = room_of_four
    said = api.say(room, alice, "rude words")
    indexed(said["id"])
    rejected = api.post(
        f"/messages/{said['id']}/moderation", owner, json={"action": "reject", "reason": "rude"}
    )
    assert rejected.status_code == 200, rejected.json
    assert rejected.json["moderation_reason"] == "rude"
    api.patch(f"/messages/{said['id']}", alice, json={"content": "nice words"})
    indexed(said["id"])
    assert listed(api, room, bob) == []
    assert listed(api, room, alice) == [said["id"]]


def test_only_moderators_see_the_queue_and_decide(api, room_of_four):
    room, _owner, moderator, alice, bob = room_of_four
    said = api.say(room, alice, "hello")
    assert api.get(f"/rooms/{room}/moderation/queue", bob).status_code == 403
    refused = api.post(f"/messages/{said['id']}/moderation", bob, json={"action": "approve"})
    assert refused.status_code == 403
    mine = api.post(f"/messages/{said['id']}/report", alice, json={"reason": "oops"})
    assert mine.status_code == 403
    stranger = api.register()
    outside = api.post(f"/messages/{said['id']}/report", stranger, json={"reason": "x"})
    assert outside.status_code == 403  # a public room: seen, but not a member
    assert queue(api, room, moderator) == []


@pytest.mark.parametrize(
    "metadata",
    [
        {"auto_moderate": {"enabled": "yes"}},
        {"auto_moderate": {"enabled": True, "action": "ban"}},
        {"auto_moderate": {"blocked_terms": ["x" * 101]}},
        {"auto_moderate": {"blocked_terms": ["   "]}},
        {"auto_moderate": {"blocked_terms": ["a\x00b"]}},
        {"auto_moderate": {"blocked_terms": ["t"] * 201}},
        {"auto_moderate": {"max_mentions": -1}},
        {"auto_moderate": {"surprise": 1}},
        {"auto_moderate": "on"},
        {"theme": "x" * 51},
        {"allow_bots": 1},
        {"flag_hold_threshold": 0},
        {"unknown": True},
    ],
)
def test_invalid_room_metadata_is_a_422(api, metadata):
    owner = api.register()
    room = api.room(owner)
    answer = api.patch(f"/rooms/{room}", owner, json={"metadata": metadata})
    assert (answer.status_code, error_code(answer)) == (422, "validation_failed"), answer.json


def test_metadata_keys_are_replaced_or_removed_one_by_one(api):
    owner, member = api.register(), api.register()
    room = api.room(owner)
    api.join(room, member)
    first = api.patch(
        f"/rooms/{room}",
        owner,
        json={"metadata": {"theme": "tech", "allow_bots": False, "flag_hold_threshold": 2}},
    )
    assert first.status_code == 200, first.json
    second = api.patch(
        f"/rooms/{room}",
        owner,
        json={"metadata": {"theme": None, "auto_moderate": {"blocked_terms": [" Foo "]}}},
    )
    assert second.json["metadata"] == {
        "allow_bots": False,
        "flag_hold_threshold": 2,
        "auto_moderate": {
            "enabled": False,
            "blocked_terms": ["foo"],
            "block_links": False,
            "max_mentions": None,
            "action": "hold",
        },
    }
    assert api.patch(f"/rooms/{room}", member, json={"metadata": {}}).status_code == 403
