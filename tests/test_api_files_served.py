"""What the API serves, through the HTTP stack, after the real pipeline
(run in this process against the real clamd): nothing uninspected, active
types as inert downloads, no scanner internals in any response, per-user
upload quotas, thumbnails within a decode budget."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.api_helpers import error_code
from tests.clamav import SOCKET
from tests.uploads import encoded, gradient, ordinary_archives, unscannable_archives

STORAGE = Path(os.environ["STORAGE_DIR"])


@pytest.fixture
def scanned(clamd_server):
    return clamd_server


def upload(api, user, room, content: bytes, name: str = "file.bin", mime: str = "text/plain"):
    return api.post(
        f"/rooms/{room}/files",
        user,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(content), name, mime)},
    )


def uploaded_and_processed(api, user, room, content: bytes, name: str) -> str:
    from veza.files import pipeline

    response = upload(api, user, room, content, name)
    assert response.status_code == 202, response.json
    pipeline.run_all(response.json["id"])
    return response.json["uuid"]


@pytest.mark.parametrize("name", sorted(unscannable_archives()))
def test_an_archive_the_scanner_cannot_inspect_is_never_served(api, scanned, name):
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    file_uuid = uploaded_and_processed(api, alice, room, unscannable_archives()[name], name)

    file = api.get(f"/files/{file_uuid}", alice).json
    assert file["virus_scan_status"] in ("failed", "infected")
    for user in (alice, bob):
        for part in ("content", "thumbnail"):
            response = api.get(f"/files/{file_uuid}/{part}", user)
            assert response.status_code in (403, 409), (name, part)
            assert error_code(response) in ("file_not_scanned", "file_infected")


@pytest.mark.parametrize("name", sorted(ordinary_archives()))
def test_ordinary_archives_and_documents_are_served(api, scanned, name):
    alice = api.register()
    room = api.room(alice)
    content = ordinary_archives()[name]
    file_uuid = uploaded_and_processed(api, alice, room, content, name)
    response = api.get(f"/files/{file_uuid}/content", alice)
    assert response.status_code == 200
    assert response.data == content


def test_an_unscannable_file_goes_back_to_its_uploader_only_when_the_operator_allows(
    api, scanned, environment
):
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    content = unscannable_archives()["lzma-harmless.zip"]
    file_uuid = uploaded_and_processed(api, alice, room, content, "mine.zip")

    response = api.get(f"/files/{file_uuid}/content", alice)
    assert response.status_code == 409
    assert response.json["error"]["fields"]["reason"].startswith("unscannable: ")

    environment(SERVE_UNSCANNABLE_TO_UPLOADER="true")
    response = api.get(f"/files/{file_uuid}/content", alice)
    assert response.status_code == 200
    assert response.data == content
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert api.get(f"/files/{file_uuid}/content", bob).status_code == 409


ACTIVE = {
    "page.html": b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>",
    "logo.svg": (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg">'
        b"<script>alert(1)</script></svg>"
    ),
    "feed.xml": b'<?xml version="1.0"?><feed><entry>x</entry></feed>',
    "app.js": b"#!/usr/bin/env node\nfetch('/api/v1/auth/me').then(r => r.text())\n",
    "doc.pdf": b"%PDF-1.4\n1 0 obj << /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >>\n",
}


@pytest.mark.parametrize("name", sorted(ACTIVE))
def test_active_types_are_served_as_inert_downloads(api, scanned, name):
    alice = api.register()
    room = api.room(alice)
    file_uuid = uploaded_and_processed(api, alice, room, ACTIVE[name], name)
    assert api.get(f"/files/{file_uuid}", alice).json["virus_scan_status"] == "clean"

    response = api.get(f"/files/{file_uuid}/content", alice)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "content", "served_as"),
    [
        ("photo.png", encoded(gradient(64, 32), "PNG"), "image/png"),
        ("notes.txt", b"plain words, nothing more\n", "text/plain"),
        ("bundle.zip", ordinary_archives()["plain.zip"], "application/zip"),
    ],
)
def test_inert_types_keep_their_type_and_are_still_sandboxed(
    api, scanned, name, content, served_as
):
    alice = api.register()
    room = api.room(alice)
    file_uuid = uploaded_and_processed(api, alice, room, content, name)
    response = api.get(f"/files/{file_uuid}/content", alice)
    assert response.status_code == 200
    assert response.headers["Content-Type"].split(";")[0] == served_as
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["Content-Disposition"].startswith("attachment")


def test_no_scanner_detail_reaches_clients_when_clamd_cannot_be_reached(
    api, scanned, environment, tmp_path
):
    from tasks.files import scan
    from veza.files import pipeline

    alice = api.register()
    room = api.room(alice)
    clean_uuid = uploaded_and_processed(api, alice, room, b"scanned while clamd was up", "a.txt")
    unreachable = tmp_path / "no-clamd-here.sock"
    environment(CLAMD_SOCKET=str(unreachable))
    response = upload(api, alice, room, b"uploaded while clamd is away", "b.txt")
    file_id, file_uuid = response.json["id"], response.json["uuid"]
    pipeline.hash_upload(file_id)
    scan.apply(args=[file_id])  # every retry at once, then the final failure

    responses = [
        api.get(f"/files/{file_uuid}", alice),
        api.get(f"/files/{file_uuid}/content", alice),
        api.get(f"/files/{clean_uuid}", alice),
    ]
    assert responses[0].json["virus_scan_status"] == "failed"
    assert responses[0].json["virus_scan_result"] == "the virus scanner is unavailable"
    assert responses[1].status_code == 409
    for response in responses:
        body = response.get_data(as_text=True)
        for secret in (str(unreachable), str(SOCKET), "clamd", "ClamAV", "Errno"):
            assert secret not in body


def stored_names() -> set[str]:
    return {str(p) for p in STORAGE.rglob("*") if p.is_file()}


def counts(db) -> tuple:
    return db.execute(
        "SELECT (SELECT count(*) FROM files), (SELECT count(*) FROM outbox)"
    ).fetchone()


def test_files_per_hour_quota_answers_429_with_retry_after_and_stores_nothing(api, db, environment):
    environment(UPLOAD_QUOTA_FILES_PER_HOUR="2")
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    assert upload(api, alice, room, b"one").status_code == 202
    assert upload(api, alice, room, b"two").status_code == 202
    # The oldest upload is 50 minutes old: it leaves the hour in 10 minutes.
    db.execute(
        "UPDATE files SET created_at = now() - interval '50 minutes'"
        " WHERE id = (SELECT min(id) FROM files)"
    )
    before, stored = counts(db), stored_names()

    response = upload(api, alice, room, b"three")
    assert response.status_code == 429
    assert error_code(response) == "upload_quota_exceeded"
    assert response.json["error"]["fields"]["quota"] == "files"
    retry_after = int(response.headers["Retry-After"])
    assert 500 < retry_after <= 600
    assert response.json["error"]["fields"]["retry_after"] == retry_after
    assert counts(db) == before
    assert stored_names() == stored
    assert upload(api, bob, room, b"bob has his own quota").status_code == 202


def test_bytes_per_day_quota_counts_the_upload_itself(api, db, environment):
    environment(UPLOAD_QUOTA_BYTES_PER_DAY="100")
    alice = api.register()
    room = api.room(alice)
    stored = stored_names()
    too_big = upload(api, alice, room, b"w" * 101)
    assert too_big.status_code == 413  # larger than a whole day's quota: never fits
    assert counts(db) == (0, 0)
    assert stored_names() == stored
    assert upload(api, alice, room, b"x" * 60).status_code == 202
    before, stored = counts(db), stored_names()

    response = upload(api, alice, room, b"y" * 60)
    assert response.status_code == 429
    assert response.json["error"]["fields"]["quota"] == "bytes"
    assert 0 < int(response.headers["Retry-After"]) <= 86_400
    assert counts(db) == before
    assert stored_names() == stored
    assert upload(api, alice, room, b"z" * 40).status_code == 202  # exactly fills the day


def test_zero_means_no_quota(api, environment):
    environment(UPLOAD_QUOTA_FILES_PER_HOUR="0", UPLOAD_QUOTA_BYTES_PER_DAY="0")
    alice = api.register()
    room = api.room(alice)
    assert all(upload(api, alice, room, b"n").status_code == 202 for _ in range(5))


def test_an_image_over_the_decode_budget_gets_no_thumbnail_and_is_still_served(api, scanned):
    """A ~200 KB PNG declaring 7000x7000 RGBA pixels: ~374 MiB to decode."""
    alice = api.register()
    room = api.room(alice)
    content = encoded(Image.new("RGBA", (7000, 7000), (200, 30, 30, 128)), "PNG")
    file_uuid = uploaded_and_processed(api, alice, room, content, "huge.png")

    file = api.get(f"/files/{file_uuid}", alice).json
    assert file["virus_scan_status"] == "clean"
    assert not file["has_thumbnail"]
    assert file["metadata"]["failed_step"] == "thumbnail"
    assert "over the 128 MiB budget" in file["metadata"]["failure_reason"]
    assert api.get(f"/files/{file_uuid}/thumbnail", alice).status_code == 404
    response = api.get(f"/files/{file_uuid}/content", alice)
    assert response.status_code == 200
    assert response.data == content


def test_concurrent_uploads_of_one_user_count_each_other(api, app, db, environment):
    """Two uploads that both passed the early check (nothing used yet) wait
    for the user's quota lock, held here until both wait on it; the second
    to get it sees the first's committed row: one 202, one 429."""
    import threading

    import psycopg

    from api.quotas import QUOTA_LOCK_CLASS
    from db.engine import libpq_url
    from tests.api_helpers import ApiClient
    from tests.conftest import wait_for

    environment(UPLOAD_QUOTA_FILES_PER_HOUR="1")
    alice = api.register()
    room = api.room(alice)
    statuses: list[int] = []

    def upload_one(content: bytes) -> None:
        statuses.append(upload(ApiClient(app.test_client()), alice, room, content).status_code)

    with psycopg.connect(libpq_url(), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (QUOTA_LOCK_CLASS, alice.id))
        uploads = [threading.Thread(target=upload_one, args=(c,)) for c in (b"a", b"b")]
        for thread in uploads:
            thread.start()
        wait_for(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()[0]
                == 2
            ),
            what="both uploads to wait for the quota lock",
        )
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", (QUOTA_LOCK_CLASS, alice.id))
    for thread in uploads:
        thread.join(30)
    assert sorted(statuses) == [202, 429]
    assert db.execute("SELECT count(*) FROM files").fetchone() == (1,)
