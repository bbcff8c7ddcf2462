"""An account's end through the API and maintenance.erase_deleted_accounts
on PostgreSQL: deleting signs out everywhere and refuses login, restoring
within the grace undoes it, and past the grace the account is erased:
messages tombstoned, its traces removed, the row anonymised, and every
counter equal to a recount."""

from __future__ import annotations

from tests.api_helpers import PASSWORD, error_code
from tests.maintenance_helpers import counter_mismatches, run_task
from tests.test_api_notifications import indexed

TASK = "maintenance.erase_deleted_accounts"


def login(api, user) -> int:
    return api.post("/auth/login", json={"login": user.username, "password": PASSWORD}).status_code


def test_a_deleted_account_is_signed_out_at_once_and_restorable_within_the_grace(api, db):
    alice = api.register()
    wrong = api.delete("/users/me", alice, json={"password": "not it"})
    assert wrong.status_code == 403
    assert error_code(wrong) == "invalid_password"
    assert api.delete("/users/me", alice, json={"password": PASSWORD}).status_code == 204

    assert api.get("/users/me", alice).status_code == 401  # its sessions ended
    assert login(api, alice) == 401
    credentials = {"login": alice.username, "password": "not it"}
    assert api.post("/users/me/restore", json=credentials).status_code == 401
    credentials["password"] = PASSWORD
    assert api.post("/users/me/restore", json=credentials).status_code == 204
    assert login(api, alice) == 200
    events = db.execute(
        "SELECT event_type FROM audit_logs WHERE event_type LIKE 'account_%%' ORDER BY id"
    ).fetchall()
    assert [e[0] for e in events] == ["account_deleted", "account_restored"]


def test_an_account_past_its_grace_is_erased_and_every_counter_stays_exact(api, db):
    alice, bob = api.register(), api.register()
    room = api.room(bob)
    api.join(room, alice)
    first = api.say(room, alice, f"hello @{bob.username}, see ```rust\nfn x() {{}}\n```")
    reply = api.say(room, bob, f"hi @{alice.username}", parent_message_id=first["id"])
    alices_reply = api.say(room, alice, "and more", parent_message_id=reply["id"])
    assert (
        api.post(f"/messages/{reply['id']}/reactions", alice, json={"emoji": "👍"}).status_code
        == 201
    )
    dm = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    whisper = api.post(f"/conversations/{dm}/messages", alice, json={"content": "psst"}).json
    indexed(first["id"], reply["id"], alices_reply["id"], whisper["id"])
    db.execute(
        "INSERT INTO files (filename, original_filename, file_path, file_size, uploaded_by,"
        " room_id, file_hash) VALUES ('a.png', 'a.png', 'blobs/x', 10, %s, %s, repeat('a', 64))",
        (alice.id, room),
    )
    assert api.delete("/users/me", alice, json={"password": PASSWORD}).status_code == 204

    assert run_task(TASK)["counts"] == {"accounts_erased": 0}  # within the grace
    db.execute(
        "UPDATE users SET deleted_at = now() - interval '15 days' WHERE id = %s", (alice.id,)
    )
    assert run_task(TASK, dry_run=True)["counts"] == {"accounts_erased": 1}
    assert (
        db.execute("SELECT erased_at FROM users WHERE id = %s", (alice.id,)).fetchone()[0] is None
    )

    counts = run_task(TASK)["counts"]
    assert counts["accounts_erased"] == 1
    assert counts["messages_erased"] == 3  # two in the room, one in the DM
    user = db.execute(
        "SELECT username, email, password_hash, display_name, erased_at IS NOT NULL"
        " FROM users WHERE id = %s",
        (alice.id,),
    ).fetchone()
    assert user == (f"erased_{alice.id}", f"erased-{alice.id}@erased.invalid", "!", None, True)
    theirs = db.execute(
        "SELECT DISTINCT is_deleted, content, raw_content, search_vector FROM messages"
        " WHERE author_id = %s",
        (alice.id,),
    ).fetchall()
    assert theirs == [(True, "[deleted]", None, None)]
    # Bob's reply stays, no longer mentioning her; her reaction and membership are gone.
    assert (
        db.execute("SELECT mentions FROM messages WHERE id = %s", (reply["id"],)).fetchone()[0]
        == []
    )
    for table in ("reactions", "room_members", "message_mentions", "user_sessions"):
        left = db.execute(f"SELECT count(*) FROM {table} WHERE user_id = %s", (alice.id,))
        assert left.fetchone()[0] == 0, table
    assert db.execute(
        "SELECT member_count, message_count FROM rooms WHERE id = %s", (room,)
    ).fetchone() == (1, 1)
    assert db.execute(
        "SELECT expires_at <= now() FROM files WHERE uploaded_by = %s", (alice.id,)
    ).fetchone()[0]
    assert counter_mismatches(db) == []
    bobs_view = api.get(f"/rooms/{room}/messages", bob).json["messages"]
    assert [m["id"] for m in bobs_view] == [reply["id"]]
    assert api.get(f"/users/{alice.id}", bob).status_code == 404

    # Done once: the next run has no one left, and the login cannot come back.
    assert run_task(TASK)["counts"] == {"accounts_erased": 0}
    restore = {"login": alice.username, "password": PASSWORD}
    assert api.post("/users/me/restore", json=restore).status_code == 401
    audited = db.execute(
        "SELECT count(*) FROM audit_logs WHERE event_type = 'account_erased' AND resource_id = %s",
        (alice.id,),
    )
    assert audited.fetchone()[0] == 1
