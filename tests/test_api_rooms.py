"""Rooms and members through the HTTP stack: settings, archive, joining,
invitations, max_members, kicks, roles, mutes, and their audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.api_helpers import error_code


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
    assert event[0:3] == (mod.id, room, {"user_id": bob.id})


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


def test_muted_until_must_be_aware_and_at_most_ten_years_ahead(api):
    owner, bob = api.register(), api.register()
    room = api.room(owner)
    api.join(room, bob)
    for until in ("9999-12-31T23:59:59-01:00", in_a_year()[:19]):  # the latter without zone
        response = api.patch(
            f"/rooms/{room}/members/{bob.id}", owner, json={"is_muted": True, "muted_until": until}
        )
        assert response.status_code == 422
        assert "muted_until" in response.json["error"]["fields"]
    # Nothing was stored that would break the member's later requests.
    assert api.post(f"/rooms/{room}/messages", bob, json={"content": "hi"}).status_code == 201


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
