"""DM attachments (issue 15, item 5): POST /conversations/{id}/files, through
the HTTP stack, the outbox, a real files worker and the real clamd; served
fail-closed to the DM's two participants only."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest

from tests.api_helpers import error_code
from tests.clamav import EICAR
from tests.conftest import start_worker, wait_for
from tests.maintenance_helpers import run_task
from tests.uploads import encoded, gradient


def dm(api, user, other) -> int:
    opened = api.post("/conversations", user, json={"user_id": other.id})
    assert opened.status_code == 201, opened.json
    return opened.json["id"]


def upload(api, user, conversation: int, content: bytes, name="notes.txt", **form):
    return api.post(
        f"/conversations/{conversation}/files",
        user,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(content), name, "text/plain"), **form},
    )


def file_count(db) -> int:
    return db.execute("SELECT count(*) FROM files").fetchone()[0]


@pytest.mark.slow  # real Celery workers
def test_a_dm_upload_is_scanned_by_the_workers_and_served_to_the_participants_only(
    api, db, clamd_server, relay
):
    alice, bob, eve = api.register(), api.register(), api.register()
    conversation = dm(api, alice, bob)
    message = api.post(
        f"/conversations/{conversation}/messages", alice, json={"content": "the photo"}
    ).json
    image = encoded(gradient(320, 200), "PNG")
    worker = start_worker("files", queues="files,scan")
    try:
        photo = upload(api, alice, conversation, image, "photo.png", message_id=message["id"])
        virus = upload(api, alice, conversation, EICAR, "virus.txt")
        assert (photo.status_code, virus.status_code) == (202, 202), (photo.json, virus.json)
        assert (photo.json["conversation_id"], photo.json["room_id"]) == (conversation, None)
        uuids = [photo.json["uuid"], virus.json["uuid"]]

        def scanned() -> bool:
            statuses = [api.get(f"/files/{u}", alice).json["virus_scan_status"] for u in uuids]
            return statuses == ["clean", "infected"]

        wait_for(scanned, timeout=120, what="both DM files to be scanned")
    finally:
        worker.stop()

    photo_uuid, virus_uuid = uuids
    served = api.get(f"/files/{photo_uuid}/content", bob)
    assert served.status_code == 200
    assert served.data == image
    assert api.get(f"/files/{photo_uuid}/thumbnail", bob).status_code == 200
    for user in (alice, bob):
        refused = api.get(f"/files/{virus_uuid}/content", user)
        assert (refused.status_code, error_code(refused)) == (403, "file_infected")
    for file_uuid in uuids:
        for part in ("", "/content", "/thumbnail"):
            assert api.get(f"/files/{file_uuid}{part}", eve).status_code == 404

    # The attachment goes with its message, for both participants.
    assert api.delete(f"/messages/{message['id']}", alice).status_code == 204
    for user in (alice, bob):
        assert api.get(f"/files/{photo_uuid}", user).status_code == 404


def test_a_dm_upload_is_for_its_participants_and_an_open_conversation(api, db):
    alice, bob, eve = api.register(), api.register(), api.register()
    conversation = dm(api, alice, bob)

    assert upload(api, eve, conversation, b"hello").status_code == 404
    db.execute("UPDATE direct_conversations SET is_blocked = true, blocked_by = %s", (bob.id,))
    refused = upload(api, alice, conversation, b"hello")
    assert (refused.status_code, error_code(refused)) == (403, "forbidden")
    assert file_count(db) == 0
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


def test_a_dm_file_attaches_only_to_the_callers_message_in_that_dm(api, db):
    alice, bob = api.register(), api.register()
    conversation = dm(api, alice, bob)
    other = dm(api, alice, api.register())
    room = api.room(alice)
    mine = api.post(f"/conversations/{conversation}/messages", alice, json={"content": "a"}).json
    theirs = api.post(f"/conversations/{conversation}/messages", bob, json={"content": "b"}).json
    elsewhere = api.post(f"/conversations/{other}/messages", alice, json={"content": "c"}).json
    in_room = api.say(room, alice)

    for message in (elsewhere, in_room):
        assert upload(api, alice, conversation, b"x", message_id=message["id"]).status_code == 404
    assert upload(api, alice, conversation, b"x", message_id=theirs["id"]).status_code == 403
    attached = upload(api, alice, conversation, b"x", message_id=mine["id"])
    assert attached.status_code == 202
    assert attached.json["message_id"] == mine["id"]
    # And a room upload cannot name a DM message.
    response = api.post(
        f"/rooms/{room}/files",
        alice,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(b"x"), "x.txt", "text/plain"), "message_id": mine["id"]},
    )
    assert response.status_code == 404


def test_dm_uploads_count_into_the_uploaders_quota(api, db, environment):
    environment(UPLOAD_QUOTA_FILES_PER_HOUR="1")
    alice, bob = api.register(), api.register()
    conversation = dm(api, alice, bob)
    room = api.room(alice)
    assert upload(api, alice, conversation, b"first").status_code == 202
    refused = api.post(
        f"/rooms/{room}/files",
        alice,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(b"second"), "x.txt", "text/plain")},
    )
    assert refused.status_code == 429
    assert upload(api, alice, conversation, b"third").status_code == 429
    assert file_count(db) == 1


def test_an_unattached_dm_upload_expires_and_a_dm_attachment_does_not(api, mdb):
    db = mdb
    alice, bob = api.register(), api.register()
    conversation = dm(api, alice, bob)
    message = api.post(f"/conversations/{conversation}/messages", alice, json={"content": "a"})
    loose = upload(api, alice, conversation, b"loose").json["id"]
    kept = upload(api, alice, conversation, b"kept", message_id=message.json["id"]).json["id"]
    db.execute("UPDATE files SET processing_status = 'completed', virus_scan_status = 'clean'")

    assert run_task("maintenance.purge_expired_files")["counts"]["expiry_set"] == 1
    expiries = db.execute("SELECT id, expires_at - created_at FROM files ORDER BY id").fetchall()
    assert expiries == [(loose, timedelta(hours=24)), (kept, None)]
