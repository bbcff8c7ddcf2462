"""Uploads and downloads through the HTTP stack: 202 with statuses, the
files.process outbox row, server-made paths, the size limit while
streaming, and bytes only after a clean scan."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tests.api_helpers import ApiClient, error_code

STORAGE = Path(os.environ["STORAGE_DIR"])
REQUEST_ID = "6f1d3c8e-2a4b-4c5d-9e6f-7a8b9c0d1e2f"


def upload(
    api, user, room, content: bytes, name="notes.txt", mime="text/plain", headers=None, **form
):
    return api.post(
        f"/rooms/{room}/files",
        user,
        content_type="multipart/form-data",
        headers=headers or {},
        data={"file": (io.BytesIO(content), name, mime), **form},
    )


def stored_uploads() -> set[str]:
    uploads = STORAGE / "uploads"
    return {p.name for p in uploads.iterdir()} if uploads.exists() else set()


def test_an_upload_is_accepted_for_processing_through_the_outbox(api, db):
    alice = api.register()
    room = api.room(alice)
    response = upload(
        api,
        alice,
        room,
        b"hello world",
        name="../../etc/passwd",
        mime="image/png",
        headers={"X-Request-ID": REQUEST_ID},
    )
    assert response.status_code == 202
    body = response.json
    assert (body["processing_status"], body["virus_scan_status"]) == ("pending", "pending")
    assert body["original_filename"] == "etc_passwd"
    assert body["metadata"]["claimed_mime_type"] == "image/png"
    path, filename = db.execute("SELECT file_path, filename FROM files").fetchone()
    assert path == f"uploads/{body['uuid']}"
    assert filename == body["uuid"]
    assert (STORAGE / path).read_bytes() == b"hello world"
    outbox = db.execute("SELECT task_name, args, request_id::text FROM outbox").fetchall()
    assert outbox == [("files.process", [body["id"]], REQUEST_ID)]
    assert api.get(f"/files/{body['uuid']}", alice).json["file_size"] == 11


def test_an_empty_upload_is_400_and_leaves_nothing(api, db):
    alice = api.register()
    room = api.room(alice)
    before = stored_uploads()
    response = upload(api, alice, room, b"")
    assert response.status_code == 400
    assert error_code(response) == "empty_file"
    assert stored_uploads() == before
    assert db.execute(
        "SELECT (SELECT count(*) FROM files), (SELECT count(*) FROM outbox)"
    ).fetchone() == (0, 0)


def test_a_missing_file_field_is_400(api):
    alice = api.register()
    room = api.room(alice)
    response = api.post(
        f"/rooms/{room}/files", alice, data={"other": "x"}, content_type="multipart/form-data"
    )
    assert response.status_code == 400


def test_the_size_limit_is_enforced_while_streaming_and_leaves_nothing(db, redis_client):
    from api import create_app

    small = ApiClient(create_app({"TESTING": True, "MAX_UPLOAD_BYTES": 1024 * 1024}).test_client())
    alice = small.register()
    room = small.room(alice)
    before = stored_uploads()
    response = upload(small, alice, room, b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert error_code(response) == "file_too_large"
    assert stored_uploads() == before
    assert db.execute("SELECT count(*) FROM files").fetchone() == (0,)
    assert upload(small, alice, room, b"x" * (1024 * 1024)).status_code == 202


def test_the_default_limit_is_100_mb(app):
    assert app.config["MAX_UPLOAD_BYTES"] == 100 * 1024 * 1024


def test_uploading_needs_membership_and_a_private_room_hides_its_files(api):
    alice, eve = api.register(), api.register()
    room = api.room(alice, is_public=False)
    assert upload(api, eve, room, b"x").status_code == 404
    file_uuid = upload(api, alice, room, b"secret").json["uuid"]
    assert api.get(f"/files/{file_uuid}", eve).status_code == 404
    assert api.get(f"/files/{file_uuid}/content", eve).status_code == 404


def test_attaching_to_a_message_of_the_room(api, db):
    alice = api.register()
    room = api.room(alice)
    message = api.say(room, alice)
    response = upload(api, alice, room, b"x", message_id=str(message["id"]))
    assert response.json["message_id"] == message["id"]
    assert upload(api, alice, room, b"x", message_id="999999").status_code == 404
    assert upload(api, alice, room, b"x", message_id="abc").status_code == 422


@pytest.mark.parametrize(
    ("scan_status", "status", "code"),
    [
        ("pending", 409, "file_not_scanned"),
        ("scanning", 409, "file_not_scanned"),
        ("failed", 409, "file_not_scanned"),
        ("infected", 403, "file_infected"),
    ],
)
def test_content_is_withheld_until_a_clean_scan(api, db, scan_status, status, code):
    alice = api.register()
    room = api.room(alice)
    file_uuid = upload(api, alice, room, b"data").json["uuid"]
    db.execute("UPDATE files SET virus_scan_status = %s", (scan_status,))
    for part in ("content", "thumbnail"):
        response = api.get(f"/files/{file_uuid}/{part}", alice)
        assert response.status_code == status
        assert error_code(response) == code
        assert response.json["error"]["fields"]["virus_scan_status"] == scan_status


def test_a_clean_file_is_served_as_a_sniffed_attachment(api, db):
    alice = api.register()
    room = api.room(alice)
    file_uuid = upload(
        api, alice, room, b"<html><script>x</script>", name="page.html", mime="text/html"
    ).json["uuid"]
    # What the worker records after hashing, sniffing and scanning.
    db.execute(
        "UPDATE files SET virus_scan_status = 'clean', processing_status = 'completed', "
        "mime_type = 'text/plain'"
    )
    response = api.get(f"/files/{file_uuid}/content", alice)
    assert response.status_code == 200
    assert response.data == b"<html><script>x</script>"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert api.get(f"/files/{file_uuid}/thumbnail", alice).status_code == 404
    assert db.execute("SELECT download_count FROM files").fetchone() == (1,)


def test_a_clean_files_thumbnail_is_served(api, db):
    from PIL import Image

    alice = api.register()
    room = api.room(alice)
    file_uuid = upload(api, alice, room, b"img").json["uuid"]
    thumb = STORAGE / "thumbs" / f"{file_uuid}.webp"
    thumb.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), "red").save(thumb, "WEBP")
    db.execute(
        "UPDATE files SET virus_scan_status = 'clean', thumbnail_path = %s",
        (f"thumbs/{file_uuid}.webp",),
    )
    response = api.get(f"/files/{file_uuid}/thumbnail", alice)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/webp"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_an_attachment_is_hidden_with_its_message(api, db):
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    message = api.say(room, bob, "abusive")
    file_uuid = upload(api, bob, room, b"abusive bytes", message_id=str(message["id"])).json["uuid"]
    db.execute("UPDATE files SET virus_scan_status = 'clean', mime_type = 'text/plain'")
    assert api.get(f"/files/{file_uuid}/content", alice).status_code == 200
    assert api.delete(f"/messages/{message['id']}", alice).status_code == 204  # the owner moderates
    for user in (alice, bob):
        for part in ("", "/content"):
            response = api.get(f"/files/{file_uuid}{part}", user)
            assert response.status_code == 404
            assert error_code(response) == "not_found"


def test_a_non_ascii_digit_message_id_is_422(api):
    alice = api.register()
    room = api.room(alice)
    response = upload(api, alice, room, b"x", message_id="²")
    assert response.status_code == 422
    assert response.json["error"]["fields"] == {"message_id": "must be a message id"}
