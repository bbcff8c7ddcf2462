"""Rooms and members through the HTTP stack: settings, archive, joining,
invitations, max_members, kicks, roles, mutes, and their audit trail."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import ValidationError

from tests.api_helpers import error_code, write_attempts
from tests.conftest import alembic
from tests.factories import fresh_database, make_room, make_user


def in_a_year() -> str:
    return (datetime.now(UTC) + timedelta(days=365)).isoformat()


def audit_events(db, event_type: str) -> list[tuple]:
    return db.execute(
        "SELECT user_id, room_id, event_data, request_id FROM audit_logs "
        "WHERE event_type = %s ORDER BY id",
        (event_type,),
    ).fetchall()


def test_create_room_makes_the_creator_its_owner_and_first_member(api):
    alice = api.register()
    response = api.post(
        "/rooms",
        alice,
        json={
            "name": "Rust",
            "is_public": False,
            "max_members": 10,
            "slow_mode_seconds": 5,
            "message_retention_days": 30,
        },
    )
    assert response.status_code == 201
    room = response.json
    assert room["owner"]["id"] == alice.id
    assert (
        room["is_public"],
        room["max_members"],
        room["slow_mode_seconds"],
        room["message_retention_days"],
        room["member_count"],
    ) == (False, 10, 5, 30, 1)


def test_out_of_range_settings_are_422(api, db):
    alice = api.register()
    for settings in (
        {"max_members": 0},
        {"slow_mode_seconds": 3601},
        {"is_public": "yes"},
        {"name": ""},
        {"name": "   "},
    ):
        response = api.post("/rooms", alice, json={"name": "x", **settings})
        assert response.status_code == 422, settings
    assert db.execute("SELECT count(*) FROM rooms").fetchone() == (0,)


def test_only_the_owner_or_a_room_admin_changes_settings_and_changes_are_audited(api, db):
    owner, member, stranger = api.register(), api.register(), api.register()
    room = api.room(owner)
    api.join(room, member)
    assert api.patch(f"/rooms/{room}", member, json={"topic": "x"}).status_code == 403
    response = api.patch(f"/rooms/{room}", owner, json={"topic": "Rust", "slow_mode_seconds": 10})
    assert response.status_code == 200
    assert (response.json["topic"], response.json["slow_mode_seconds"]) == ("Rust", 10)
    (event,) = audit_events(db, "room_settings_changed")
    assert event[0:2] == (owner.id, room)
    assert event[2]["changes"]["slow_mode_seconds"] == [0, 10]
    api.patch(f"/rooms/{room}/members/{member.id}", owner, json={"role": "admin"})
    assert api.patch(f"/rooms/{room}", member, json={"topic": "y"}).status_code == 200
    private = api.room(owner, is_public=False)
    assert api.patch(f"/rooms/{private}", stranger, json={"topic": "x"}).status_code == 404


def test_null_for_a_required_setting_is_422(api):
    owner = api.register()
    room = api.room(owner)
    assert api.patch(f"/rooms/{room}", owner, json={"max_members": None}).status_code == 422
    assert api.patch(f"/rooms/{room}", owner, json={"topic": None}).status_code == 200


def test_an_archived_room_accepts_no_messages(api):
    owner = api.register()
    room = api.room(owner)
    assert api.patch(f"/rooms/{room}", owner, json={"is_archived": True}).status_code == 200
    response = api.post(f"/rooms/{room}/messages", owner, json={"content": "hi"})
    assert response.status_code == 409
    assert error_code(response) == "room_archived"


def test_anyone_joins_a_public_room_once(api):
    owner, bob = api.register(), api.register()
    room = api.room(owner)
    response = api.post(f"/rooms/{room}/members", bob, json={})
    assert response.status_code == 201
    assert (response.json["user"]["id"], response.json["role"]) == (bob.id, "member")
    assert api.post(f"/rooms/{room}/members", bob, json={}).status_code == 409
    assert api.get(f"/rooms/{room}", bob).json["member_count"] == 2


def test_a_joiner_gets_the_welcome_message_in_the_answer_and_keeps_it_in_the_room(api, db):
    owner, bob, carol, dave = (api.register() for _ in range(4))
    room = api.room(owner, welcome_message="Welcome! Read the rules first.")
    joined = api.post(f"/rooms/{room}/members", bob, json={})
    assert joined.status_code == 201
    assert joined.json["welcome_message"] == "Welcome! Read the rules first."
    invited = api.post(f"/rooms/{room}/members", owner, json={"user_id": carol.id})
    assert invited.json["welcome_message"] == "Welcome! Read the rules first."
    for user in (bob, carol):
        shown = api.get(f"/rooms/{room}", user).json["welcome_message"]
        assert shown == "Welcome! Read the rules first."
    # Delivered by the answer alone: no message, no notification, nothing to
    # repeat; joining again is the usual 409.
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM notifications").fetchone() == (0,)
    assert api.post(f"/rooms/{room}/members", bob, json={}).status_code == 409
    silent = api.room(owner)
    assert api.post(f"/rooms/{silent}/members", dave, json={}).json["welcome_message"] is None


def test_a_private_room_is_invisible_to_outsiders(api):
    owner, bob = api.register(), api.register()
    room = api.room(owner, is_public=False)
    for response in (
        api.post(f"/rooms/{room}/members", bob, json={}),
        api.get(f"/rooms/{room}", bob),
        api.get(f"/rooms/{room}/messages", bob),
        api.post(f"/rooms/{room}/messages", bob, json={"content": "hi"}),
    ):
        assert response.status_code == 404
        assert error_code(response) == "not_found"
    # ...exactly like a room that does not exist.
    assert api.get("/rooms/999999", bob).status_code == 404


def test_private_rooms_are_entered_by_invitation_from_those_allowed_to_invite(api):
    owner, member, inviter, guest = (api.register() for _ in range(4))
    room = api.room(owner, is_public=False)
    for user in (member, inviter):
        assert (
            api.post(f"/rooms/{room}/members", owner, json={"user_id": user.id}).status_code == 201
        )
    assert api.post(f"/rooms/{room}/members", member, json={"user_id": guest.id}).status_code == 403
    api.patch(f"/rooms/{room}/members/{inviter.id}", owner, json={"can_invite": True})
    response = api.post(f"/rooms/{room}/members", inviter, json={"user_id": guest.id})
    assert response.status_code == 201
    assert response.json["invited_by"] == inviter.id
    assert api.post(f"/rooms/{room}/messages", guest, json={"content": "hi"}).status_code == 201


def test_max_members_is_enforced(api):
    owner, bob, carol = api.register(), api.register(), api.register()
    room = api.room(owner, max_members=2)
    api.join(room, bob)
    response = api.post(f"/rooms/{room}/members", carol, json={})
    assert response.status_code == 409
    assert error_code(response) == "room_full"


def test_leaving_and_the_owner_cannot_leave(api):
    owner, bob = api.register(), api.register()
    room = api.room(owner)
    api.join(room, bob)
    assert api.delete(f"/rooms/{room}/members/{bob.id}", bob).status_code == 204
    assert api.post(f"/rooms/{room}/messages", bob, json={"content": "hi"}).status_code == 403
    assert api.delete(f"/rooms/{room}/members/{owner.id}", owner).status_code == 409


def test_moderators_kick_members_but_not_each_other_and_kicks_are_audited(api, db):
    owner, mod, mod2, bob = (api.register() for _ in range(4))
    room = api.room(owner)
    for user in (mod, mod2, bob):
        api.join(room, user)
    for user in (mod, mod2):
        api.patch(f"/rooms/{room}/members/{user.id}", owner, json={"role": "moderator"})
    assert api.delete(f"/rooms/{room}/members/{mod2.id}", mod).status_code == 403
    assert api.delete(f"/rooms/{room}/members/{mod.id}", bob).status_code == 403
    assert api.delete(f"/rooms/{room}/members/{bob.id}", mod).status_code == 204
    (event,) = audit_events(db, "member_kicked")
    assert event[0:2] == (mod.id, room)
    assert event[2]["user_id"] == bob.id
    (banned_until,) = db.execute("SELECT banned_until FROM room_bans").fetchone()
    assert datetime.fromisoformat(event[2]["banned_until"]) == banned_until


def test_roles_are_granted_below_your_own_rank_and_audited(api, db):
    owner, admin, mod, bob = (api.register() for _ in range(4))
    room = api.room(owner)
    for user in (admin, mod, bob):
        api.join(room, user)
    assert (
        api.patch(f"/rooms/{room}/members/{admin.id}", owner, json={"role": "admin"}).json["role"]
        == "admin"
    )
    assert (
        api.patch(f"/rooms/{room}/members/{mod.id}", admin, json={"role": "moderator"}).status_code
        == 200
    )
    assert (
        api.patch(f"/rooms/{room}/members/{bob.id}", admin, json={"role": "admin"}).status_code
        == 403
    )
    assert (
        api.patch(f"/rooms/{room}/members/{bob.id}", mod, json={"role": "moderator"}).status_code
        == 403
    )
    assert (
        api.patch(f"/rooms/{room}/members/{bob.id}", mod, json={"can_invite": True}).status_code
        == 403
    )
    changes = [e[2]["changes"] for e in audit_events(db, "member_permissions_changed")]
    assert changes == [{"role": ["member", "admin"]}, {"role": ["member", "moderator"]}]


def test_a_muted_member_cannot_post_until_muted_until(api, db):
    owner, mod, bob = api.register(), api.register(), api.register()
    room = api.room(owner)
    api.join(room, mod)
    api.join(room, bob)
    api.patch(f"/rooms/{room}/members/{mod.id}", owner, json={"role": "moderator"})
    response = api.patch(
        f"/rooms/{room}/members/{bob.id}", mod, json={"is_muted": True, "muted_until": in_a_year()}
    )
    assert response.status_code == 200
    assert response.json["is_muted"]
    assert api.post(f"/rooms/{room}/messages", bob, json={"content": "hi"}).status_code == 403
    assert len(audit_events(db, "member_muted")) == 1
    db.execute(
        "UPDATE room_members SET muted_until = now() - interval '1 second' WHERE user_id = %s",
        (bob.id,),
    )
    assert api.post(f"/rooms/{room}/messages", bob, json={"content": "hi"}).status_code == 201


def test_a_plain_member_cannot_mute(api):
    owner, bob, carol = api.register(), api.register(), api.register()
    room = api.room(owner)
    api.join(room, bob)
    api.join(room, carol)
    assert (
        api.patch(f"/rooms/{room}/members/{carol.id}", bob, json={"is_muted": True}).status_code
        == 403
    )


def test_max_members_holds_under_concurrent_joins(app, api):
    from concurrent.futures import ThreadPoolExecutor

    from tests.api_helpers import ApiClient

    owner = api.register()
    room = api.room(owner, max_members=3)
    joiners = [api.register() for _ in range(6)]

    def join(user):
        return ApiClient(app.test_client()).post(f"/rooms/{room}/members", user, json={})

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(r.status_code for r in pool.map(join, joiners))
    assert statuses == [201, 201, 409, 409, 409, 409]
    assert api.get(f"/rooms/{room}", owner).json["member_count"] == 3


YEAR_ONE = "0001-01-01T00:00:00+14:00"  # 1 BC in UTC: PostgreSQL stores it, psycopg cannot read it


def test_a_year_one_muted_until_is_422_stores_nothing_and_the_room_stays_usable(api, db):
    owner, bob = api.register(), api.register()
    room = api.room(owner)
    api.join(room, bob)
    for until in (
        YEAR_ONE,
        "9999-12-31T23:59:59-14:00",  # past 9999 in UTC
        "2001-01-01T00:00:00Z",  # sane, but over
        (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        (datetime.now(UTC) + timedelta(days=367)).isoformat(),  # over a year ahead
        in_a_year()[:19],  # without a time zone
    ):
        response = api.patch(
            f"/rooms/{room}/members/{bob.id}", owner, json={"is_muted": True, "muted_until": until}
        )
        assert response.status_code == 422, until
        assert "muted_until" in response.json["error"]["fields"]
    assert db.execute(
        "SELECT is_muted, muted_until FROM room_members WHERE user_id = %s", (bob.id,)
    ).fetchone() == (False, None)
    assert audit_events(db, "member_muted") == []
    # The room works for the member, and the owner still mutes and kicks them.
    assert api.get(f"/rooms/{room}", bob).status_code == 200
    assert api.post(f"/rooms/{room}/messages", bob, json={"content": "hi"}).status_code == 201
    muted = api.patch(
        f"/rooms/{room}/members/{bob.id}",
        owner,
        json={"is_muted": True, "muted_until": in_a_year()},
    )
    assert muted.status_code == 200
    assert api.delete(f"/rooms/{room}/members/{bob.id}", owner).status_code == 204


def test_the_database_refuses_a_muted_until_it_could_not_give_back(api, db):
    owner, bob = api.register(), api.register()
    room = api.room(owner)
    api.join(room, bob)
    for statement in (
        "UPDATE room_members SET is_muted = true, muted_until = %s WHERE user_id = %s",
        "INSERT INTO room_mutes (muted_until, user_id, room_id) VALUES (%s, %s, %s)",
    ):
        with pytest.raises(psycopg.errors.CheckViolation), db.transaction():
            db.execute(statement, (YEAR_ONE, bob.id, room)[: statement.count("%s")])


def client_models() -> list[tuple[type, Callable[[type, dict], object]]]:
    """Every body and query-string model of every operation, each with the
    way api/spec.py parses it (bodies as JSON, strictly; queries as strings)."""
    import api.v1  # noqa: F401  (registers every operation)
    from api.spec import OPERATIONS

    def as_body(model, data):
        return model.model_validate_json(json.dumps(data))

    def as_query(model, data):
        return model.model_validate(data)

    found = [(op.body, as_body) for op in OPERATIONS if op.body is not None]
    found += [(op.query, as_query) for op in OPERATIONS if op.query is not None]
    return found


def test_every_client_supplied_instant_is_bounded_at_input():
    """Whatever body or query takes a timestamp, now or later, refuses
    instants PostgreSQL would store and psycopg could not read back."""
    checked = []
    for model, parse in client_models():
        for name, prop in model.model_json_schema().get("properties", {}).items():
            if '"date-time"' not in json.dumps(prop):  # datetime, AwareDatetime...
                continue
            for bad in (YEAR_ONE, "9999-12-31T23:59:59-14:00", "1999-12-31T23:59:59Z"):
                with pytest.raises(ValidationError) as refused:
                    parse(model, {name: bad})
                assert any(e["loc"] == (name,) for e in refused.value.errors()), (model, name)
            checked.append(f"{model.__name__}.{name}")
    assert "MemberPatch.muted_until" in checked


def test_can_manage_members_mutes_and_kicks_plain_members_only(api):
    owner, manager, mod, bob, carol = (api.register() for _ in range(5))
    room = api.room(owner)
    for user in (manager, mod, bob, carol):
        api.join(room, user)
    api.patch(f"/rooms/{room}/members/{mod.id}", owner, json={"role": "moderator"})
    assert (
        api.patch(
            f"/rooms/{room}/members/{manager.id}", owner, json={"can_manage_members": True}
        ).status_code
        == 200
    )
    muted = api.patch(f"/rooms/{room}/members/{bob.id}", manager, json={"is_muted": True})
    assert muted.status_code == 200
    assert muted.json["is_muted"]
    assert api.delete(f"/rooms/{room}/members/{carol.id}", manager).status_code == 204
    # Never on an equal or higher rank, nor roles and permissions.
    assert (
        api.patch(f"/rooms/{room}/members/{mod.id}", manager, json={"is_muted": True}).status_code
        == 403
    )
    assert api.delete(f"/rooms/{room}/members/{mod.id}", manager).status_code == 403
    assert (
        api.patch(f"/rooms/{room}/members/{bob.id}", manager, json={"can_invite": True}).status_code
        == 403
    )


def test_an_archived_room_takes_no_reactions(api, db):
    owner = api.register()
    room = api.room(owner)
    message = api.say(room, owner)
    assert api.patch(f"/rooms/{room}", owner, json={"is_archived": True}).status_code == 200
    response = api.post(f"/messages/{message['id']}/reactions", owner, json={"emoji": "👍"})
    assert response.status_code == 409
    assert error_code(response) == "room_archived"
    assert db.execute("SELECT count(*) FROM reactions").fetchone() == (0,)


def test_a_deleted_or_inactive_user_cannot_be_invited(api, db):
    owner, gone, idle = api.register(), api.register(), api.register()
    room = api.room(owner, is_public=False)
    db.execute("UPDATE users SET deleted_at = now() WHERE id = %s", (gone.id,))
    db.execute("UPDATE users SET is_active = false WHERE id = %s", (idle.id,))
    for user in (gone, idle):
        response = api.post(f"/rooms/{room}/members", owner, json={"user_id": user.id})
        assert response.status_code == 404
        assert error_code(response) == "not_found"
    assert db.execute("SELECT count(*) FROM room_members").fetchone() == (1,)


def test_a_mute_survives_leaving_and_rejoining_or_a_kick_and_an_invitation(api, db):
    owner, bob, carol = api.register(), api.register(), api.register()
    room = api.room(owner)
    api.join(room, bob)
    api.join(room, carol)
    api.patch(f"/rooms/{room}/members/{bob.id}", owner, json={"is_muted": True})
    api.patch(
        f"/rooms/{room}/members/{carol.id}",
        owner,
        json={"is_muted": True, "muted_until": in_a_year()},
    )
    assert api.delete(f"/rooms/{room}/members/{bob.id}", bob).status_code == 204
    assert api.delete(f"/rooms/{room}/members/{carol.id}", owner).status_code == 204
    api.join(room, bob)
    assert api.delete(f"/rooms/{room}/bans/{carol.id}", owner).status_code == 204
    assert api.post(f"/rooms/{room}/members", owner, json={"user_id": carol.id}).status_code == 201
    for user in (bob, carol):
        response = api.post(f"/rooms/{room}/messages", user, json={"content": "I'm back"})
        assert response.status_code == 403
    # A mute that ran out while they were away is not carried over.
    api.patch(
        f"/rooms/{room}/members/{carol.id}",
        owner,
        json={"is_muted": True, "muted_until": in_a_year()},
    )
    assert api.delete(f"/rooms/{room}/members/{carol.id}", carol).status_code == 204
    db.execute("UPDATE room_mutes SET muted_until = now() - interval '1 second'")
    api.join(room, carol)
    assert api.post(f"/rooms/{room}/messages", carol, json={"content": "hi"}).status_code == 201


# ------------------------------------------------------- self, bans, ranks


def test_nobody_changes_their_own_mute_role_or_permissions(api, db):
    owner, manager, mod = api.register(), api.register(), api.register()
    room = api.room(owner)
    api.join(room, manager)
    api.join(room, mod)
    api.patch(f"/rooms/{room}/members/{manager.id}", owner, json={"can_manage_members": True})
    api.patch(f"/rooms/{room}/members/{mod.id}", owner, json={"role": "moderator"})
    api.patch(f"/rooms/{room}/members/{manager.id}", owner, json={"is_muted": True})
    # The finding: a muted member with can_manage_members unmuted themselves.
    for body in ({"is_muted": False}, {"muted_until": in_a_year()}, {"can_invite": True}):
        response = api.patch(f"/rooms/{room}/members/{manager.id}", manager, json=body)
        assert response.status_code == 403, body
    # Nor does anyone mute themselves, or raise or lower their own role.
    assert (
        api.patch(f"/rooms/{room}/members/{mod.id}", mod, json={"is_muted": True}).status_code
        == 403
    )
    assert (
        api.patch(f"/rooms/{room}/members/{owner.id}", owner, json={"role": "member"}).status_code
        == 403
    )
    assert api.post(f"/rooms/{room}/messages", manager, json={"content": "hi"}).status_code == 403
    assert db.execute(
        "SELECT user_id, role::text, is_muted, can_invite FROM room_members ORDER BY user_id"
    ).fetchall() == [
        (owner.id, "admin", False, True),
        (manager.id, "member", True, False),
        (mod.id, "moderator", False, False),
    ]
    assert (
        api.patch(
            f"/rooms/{room}/members/{manager.id}", owner, json={"is_muted": False}
        ).status_code
        == 200
    )


def test_a_kick_bans_from_rejoining_posting_reacting_and_editing_until_the_ban_ends(api, db):
    owner, mod, bob = api.register(), api.register(), api.register()
    room = api.room(owner)
    api.join(room, mod)
    api.join(room, bob)
    api.patch(f"/rooms/{room}/members/{mod.id}", owner, json={"role": "moderator"})
    old = api.say(room, bob, "before the kick")
    assert api.delete(f"/rooms/{room}/members/{bob.id}?ban_seconds=3600", mod).status_code == 204
    # The finding: a kicked user rejoined a public room at once and edited old messages.
    rejoin = api.post(f"/rooms/{room}/members", bob, json={})
    assert rejoin.status_code == 403
    assert error_code(rejoin) == "banned"
    (until,) = db.execute(
        "SELECT banned_until FROM room_bans WHERE user_id = %s", (bob.id,)
    ).fetchone()
    assert datetime.fromisoformat(rejoin.json["error"]["fields"]["banned_until"]) == until
    invited = api.post(f"/rooms/{room}/members", owner, json={"user_id": bob.id})
    assert (invited.status_code, error_code(invited)) == (403, "banned")
    writes = write_attempts(api, bob, room, old["id"])
    assert writes == dict.fromkeys(writes, 403)
    assert db.execute("SELECT content FROM messages WHERE id = %s", (old["id"],)).fetchone() == (
        "before the kick",
    )
    assert db.execute("SELECT count(*) FROM reactions").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM files").fetchone() == (0,)
    listed = api.get(f"/rooms/{room}/bans", mod)
    assert [(b["user"]["id"], b["banned_by"]) for b in listed.json["bans"]] == [(bob.id, mod.id)]
    # Once the ban has run out, they are back.
    db.execute("UPDATE room_bans SET banned_until = now() - interval '1 second'")
    assert api.get(f"/rooms/{room}/bans", mod).json["bans"] == []
    api.join(room, bob)
    assert api.patch(f"/messages/{old['id']}", bob, json={"content": "edited"}).status_code == 200
    assert db.execute("SELECT count(*) FROM room_bans").fetchone() == (0,)


def test_a_kick_bans_for_the_default_time_unless_told(api, db):
    owner, bob, carol = api.register(), api.register(), api.register()
    room = api.room(owner, is_public=False)
    for user in (bob, carol):
        api.post(f"/rooms/{room}/members", owner, json={"user_id": user.id})
    assert api.delete(f"/rooms/{room}/members/{bob.id}", owner).status_code == 204
    assert api.delete(f"/rooms/{room}/members/{carol.id}?ban_seconds=60", owner).status_code == 204
    lengths = db.execute(
        "SELECT user_id, extract(epoch FROM banned_until - created_at)::int FROM room_bans"
        " ORDER BY user_id"
    ).fetchall()
    assert lengths == [(bob.id, 86400), (carol.id, 60)]


def test_ban_seconds_out_of_range_is_422_and_nobody_is_removed(api, db):
    owner, bob = api.register(), api.register()
    room = api.room(owner)
    api.join(room, bob)
    for query in ("ban_seconds=0", "ban_seconds=31622401", "ban_seconds=soon", "ban_for=5"):
        response = api.delete(f"/rooms/{room}/members/{bob.id}?{query}", owner)
        assert response.status_code == 422, query
    # Leaving is not a kick: it takes no ban.
    assert api.delete(f"/rooms/{room}/members/{bob.id}?ban_seconds=60", bob).status_code == 422
    assert db.execute("SELECT count(*) FROM room_members").fetchone() == (2,)
    assert db.execute("SELECT count(*) FROM room_bans").fetchone() == (0,)


def test_a_ban_is_lifted_early_only_by_a_rank_at_least_its_authors(api, db):
    owner, admin, mod, mod2, bob, carol, dave = (api.register() for _ in range(7))
    room = api.room(owner)
    for user in (admin, mod, mod2, bob, carol, dave):
        api.join(room, user)
    api.patch(f"/rooms/{room}/members/{admin.id}", owner, json={"role": "admin"})
    for user in (mod, mod2):
        api.patch(f"/rooms/{room}/members/{user.id}", owner, json={"role": "moderator"})
    api.delete(f"/rooms/{room}/members/{bob.id}", owner)
    api.delete(f"/rooms/{room}/members/{carol.id}", mod)
    # Not by those the owner outranks, not by plain members, not for no ban.
    assert api.delete(f"/rooms/{room}/bans/{bob.id}", admin).status_code == 403
    assert api.delete(f"/rooms/{room}/bans/{bob.id}", mod).status_code == 403
    assert api.delete(f"/rooms/{room}/bans/{carol.id}", dave).status_code == 403
    assert api.get(f"/rooms/{room}/bans", dave).status_code == 403
    assert api.delete(f"/rooms/{room}/bans/{dave.id}", owner).status_code == 404
    assert db.execute("SELECT count(*) FROM room_bans").fetchone() == (2,)
    # A moderator lifts a fellow moderator's ban; the owner lifts their own.
    assert api.delete(f"/rooms/{room}/bans/{carol.id}", mod2).status_code == 204
    assert api.delete(f"/rooms/{room}/bans/{bob.id}", owner).status_code == 204
    api.join(room, bob)
    api.join(room, carol)
    assert [e[2]["user_id"] for e in audit_events(db, "member_unbanned")] == [carol.id, bob.id]


# Who may act on whom: every action, on an equal or higher rank (and on
# oneself) refused, on a lower rank allowed. "manager" is a plain member
# with can_manage_members, a moderator for moderation.
CAST = ("owner", "admin", "admin2", "mod", "mod2", "manager", "manager2", "member", "member2")
EQUAL_OR_HIGHER = [
    ("admin", "admin2"), ("mod", "mod2"), ("manager", "manager2"), ("member", "member2"),
    ("admin", "owner"), ("mod", "admin"), ("mod", "owner"), ("manager", "mod"),
    ("manager", "admin"), ("mod", "manager"), ("member", "manager"),
]  # fmt: skip
SELF = [("admin", "admin"), ("mod", "mod"), ("manager", "manager"), ("owner", "owner")]
ACTIONS = {
    # action: (the request, the pairs it refuses beyond rank, the pairs it
    # allows, in an order where no actor has lost their rank or seat before)
    "mute": (
        ("PATCH", {"is_muted": True}),
        [("member", "member2")],
        [("owner", "admin"), ("admin", "mod"), ("mod", "member"), ("manager", "member2")],
    ),
    "kick": (
        ("DELETE", None),
        [("member", "member2")],
        [("manager", "member2"), ("mod", "member"), ("admin", "mod"), ("owner", "admin")],
    ),
    "role": (
        ("PATCH", {"role": "member"}),
        [("mod", "member"), ("manager", "member")],  # roles are for admins and up
        [("admin2", "manager"), ("admin", "mod"), ("owner", "admin")],
    ),
    "permission": (
        ("PATCH", {"can_invite": True}),
        [("mod", "member"), ("manager", "member")],
        [("owner", "admin"), ("admin", "mod"), ("admin2", "manager2")],
    ),
}


@pytest.mark.parametrize("action", ACTIONS)
def test_moderation_never_acts_on_an_equal_or_higher_rank_or_oneself(api, db, action):
    users = {name: api.register() for name in CAST}
    room = api.room(users["owner"])
    for name in CAST[1:]:
        api.join(room, users[name])
    grants = {"admin": {"role": "admin"}, "mod": {"role": "moderator"}}
    for name in CAST[1:]:
        grant = grants.get(name.rstrip("2")) or (
            {"can_manage_members": True} if name.startswith("manager") else None
        )
        if grant:
            api.patch(f"/rooms/{room}/members/{users[name].id}", users["owner"], json=grant)
    (method, body), refused_too, allowed = ACTIONS[action]

    def attempt(actor: str, target: str):
        path = f"/rooms/{room}/members/{users[target].id}"
        return api.call(method, path, users[actor], **({"json": body} if body else {}))

    def state() -> list[tuple]:
        return db.execute(
            "SELECT user_id, role::text, can_invite, can_manage_members, is_muted"
            " FROM room_members ORDER BY user_id"
        ).fetchall()

    before = state()
    refused = EQUAL_OR_HIGHER + refused_too + (SELF if action != "kick" else [])
    for actor, target in refused:
        response = attempt(actor, target)
        expected = 409 if action == "kick" and target == "owner" else 403
        assert response.status_code == expected, (actor, target)
    assert state() == before
    assert db.execute("SELECT count(*) FROM room_bans").fetchone() == (0,)
    for actor, target in allowed:
        assert attempt(actor, target).status_code in (200, 204), (actor, target)
    assert state() != before


@pytest.mark.slow
def test_migration_0008_repairs_mutes_stored_out_of_readable_range():
    """A membership muted until 1 BC (stored before the bounds) is readable
    again after the upgrade: the mute that 'ended' then is lifted, and one
    ending past 9999 lasts until lifted."""
    with fresh_database("bans") as url:
        alembic("upgrade", "0007")
        with psycopg.connect(url, autocommit=True) as conn:
            owner, bob, carol = (make_user(conn) for _ in range(3))
            room = make_room(conn, owner)
            for user, until in ((bob, YEAR_ONE), (carol, "294276-01-01 00:00:00+00")):
                conn.execute(
                    "INSERT INTO room_members (room_id, user_id, is_muted, muted_until)"
                    " VALUES (%s, %s, true, %s::timestamptz)",
                    (room, user, until),
                )
                conn.execute(
                    "INSERT INTO room_mutes (room_id, user_id, muted_until)"
                    " VALUES (%s, %s, %s::timestamptz)",
                    (room, user, until),
                )
            with pytest.raises(psycopg.DataError):  # the finding: unreadable
                conn.execute("SELECT muted_until FROM room_members").fetchall()
        alembic("upgrade", "head")
        with psycopg.connect(url, autocommit=True) as conn:
            members = conn.execute(
                "SELECT user_id, is_muted, muted_until FROM room_members ORDER BY user_id"
            ).fetchall()
            mutes = conn.execute("SELECT user_id, muted_until FROM room_mutes").fetchall()
    assert members == [(bob, False, None), (carol, True, None)]
    assert mutes == [(carol, None)]
