"""Profiles through the API on PostgreSQL: reading one's own and someone
else's, is_online from session activity, and PATCH /users/me with its
validation and audit."""

from __future__ import annotations

import pytest

from tests.api_helpers import error_code

# The seed's user JSON ("Structure JSON Utilisateur"), every key.
SEED_USER_KEYS = {
    "id",
    "uuid",
    "username",
    "email",
    "display_name",
    "bio",
    "avatar_url",
    "status_message",
    "timezone",
    "language",
    "role",
    "is_active",
    "is_verified",
    "is_online",
    "last_login_at",
    "last_seen_at",
    "totp_enabled",
    "created_at",
    "updated_at",
}

PROFILE = {
    "display_name": "Alice Liddell",
    "bio": "Développeuse passionnée de Rust",
    "avatar_url": "https://cdn.example.com/avatars/alice.jpg",
    "status_message": "En développement 🚀",
    "timezone": "Europe/Paris",
    "language": "fr",
}


def test_own_profile_shows_email_and_2fa_state_and_someone_elses_does_not(api):
    alice, bob = api.register(), api.register()
    own = api.get("/users/me", alice)
    seen = api.get(f"/users/{alice.id}", bob)
    assert own.status_code == seen.status_code == 200
    assert set(own.json) == set(seen.json) == SEED_USER_KEYS
    assert own.json["email"] == f"{alice.username}@example.com"
    assert own.json["totp_enabled"] is False
    assert seen.json["email"] is None
    assert seen.json["totp_enabled"] is None
    private = {"email", "totp_enabled"}
    assert {k: v for k, v in own.json.items() if k not in private} == {
        k: v for k, v in seen.json.items() if k not in private
    }
    assert api.get(f"/users/{alice.id}", alice).json == own.json  # one's own id is "me"
    assert own.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("gone", ["is_active = false", "deleted_at = now()"])
def test_a_deactivated_or_deleted_account_has_no_profile(api, db, gone):
    alice, bob = api.register(), api.register()
    db.execute(f"UPDATE users SET {gone} WHERE id = %s", (bob.id,))
    hidden = api.get(f"/users/{bob.id}", alice)
    unknown = api.get("/users/2147483647", alice)
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.data == unknown.data


def online(api, viewer, user) -> bool:
    return api.get(f"/users/{user.id}", viewer).json["is_online"]


def test_is_online_while_a_live_session_was_active_in_the_last_five_minutes(api, db):
    alice, bob = api.register(), api.register()
    assert online(api, alice, bob)  # just logged in
    idle = "UPDATE user_sessions SET last_activity_at = now() - %s::interval WHERE user_id = %s"
    db.execute(idle, ("4 minutes", bob.id))
    assert online(api, alice, bob)
    db.execute(idle, ("6 minutes", bob.id))
    assert not online(api, alice, bob)
    assert api.get("/users/me", bob).json["is_online"]  # a request is activity
    assert online(api, alice, bob)


def test_an_expired_or_logged_out_session_is_offline_however_recent(api, db):
    alice, bob = api.register(), api.register()
    db.execute(
        "UPDATE user_sessions SET created_at = now() - interval '2 hours', "
        "expires_at = now() - interval '1 second', last_activity_at = now() WHERE user_id = %s",
        (bob.id,),
    )
    assert not online(api, alice, bob)
    carol = api.register()
    assert api.post("/auth/logout", carol).status_code == 204
    assert not online(api, alice, carol)


def test_a_language_is_stored_as_its_standard_bcp_47_tag(api):
    alice = api.register()
    for sent, stored in (("fra", "fr"), ("ZH-hant-tw", "zh-Hant-TW"), ("es-419", "es-419")):
        answer = api.patch("/users/me", alice, json={"language": sent})
        assert answer.status_code == 200, answer.json
        assert answer.json["language"] == stored


def test_patch_changes_the_fields_sent_and_audits_their_names_only(api, db):
    alice = api.register()
    before = api.get("/users/me", alice).json
    changed = api.patch("/users/me", alice, json=PROFILE | {"language": "PT-br"})
    assert changed.status_code == 200, changed.json
    assert changed.json == api.get("/users/me", alice).json
    assert {k: changed.json[k] for k in PROFILE} == PROFILE | {"language": "pt-BR"}
    assert changed.json["updated_at"] > before["updated_at"]
    assert changed.json["email"] == before["email"]  # still shown to themself
    assert api.patch("/users/me", alice, json={"bio": PROFILE["bio"]}).status_code == 200
    assert api.patch("/users/me", alice, json={}).json == changed.json
    audited = db.execute(
        "SELECT user_id, resource_type, resource_id, event_data FROM audit_logs "
        "WHERE event_type = 'profile_changed'"
    ).fetchall()
    # One row: sending what is already there changes nothing and audits nothing.
    assert audited == [(alice.id, "user", alice.id, {"fields": sorted(PROFILE)})]


def test_null_or_blank_clears_a_text_field(api):
    alice = api.register()
    api.patch("/users/me", alice, json=PROFILE)
    cleared = api.patch(
        "/users/me",
        alice,
        json={"display_name": None, "bio": "", "avatar_url": " ", "status_message": "\n"},
    )
    assert cleared.status_code == 200, cleared.json
    assert [cleared.json[k] for k in ("display_name", "bio", "avatar_url", "status_message")] == [
        None
    ] * 4
    assert cleared.json["timezone"] == "Europe/Paris"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("display_name", "x" * 101),
        ("display_name", 42),
        ("bio", "x" * 1001),
        ("bio", "nul\x00"),
        ("avatar_url", "javascript:alert(1)"),
        ("avatar_url", "ftp://cdn.example.com/a.jpg"),
        ("avatar_url", "https:///a.jpg"),
        ("avatar_url", "https://cdn.example.com/my avatar.jpg"),
        ("avatar_url", "https://cdn.example.com/" + "a" * 480),
        ("status_message", "x" * 201),
        ("timezone", "Mars/Olympus_Mons"),
        ("timezone", "europe/paris"),
        ("timezone", "+02:00"),
        ("timezone", None),
        ("language", "xx"),
        ("language", "french"),
        ("language", "zh-Hant-419"),
        ("language", None),
        ("email", "new@example.com"),  # not a profile field
        ("nickname", "al"),
    ],
)
def test_an_invalid_or_unknown_field_is_a_422_naming_it_and_changes_nothing(api, field, value):
    alice = api.register()
    before = api.get("/users/me", alice).json
    refused = api.patch("/users/me", alice, json={"bio": "kept?", field: value})
    assert refused.status_code == 422, refused.json
    assert error_code(refused) == "validation_failed"
    assert list(refused.json["error"]["fields"]) == [field]
    assert api.get("/users/me", alice).json == before


def test_profiles_need_a_token(api):
    alice = api.register()
    assert api.get(f"/users/{alice.id}").status_code == 401
    assert api.get("/users/me").status_code == 401
    assert api.patch("/users/me", json={"bio": "x"}).status_code == 401
