"""Blob storage in a bucket (STORAGE_BACKEND=s3) against a real
S3-compatible server, SeaweedFS (tests/seaweedfs.py): uploads through the
API, the pipeline's steps (real clamd), serving streamed and by presigned
redirect, quarantine, refcount-safe deletion, the orphan sweep both ways,
debris, and the move of a local store into the bucket. Each test has a key
prefix of its own in the run's bucket, and the bucket's listing is the
evidence."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.clamav import EICAR
from tests.factories import make_user
from tests.maintenance_helpers import run_task
from tests.seaweedfs import BUCKET, bucket_keys
from tests.uploads import encoded, gradient, row, upload


@pytest.fixture
def s3(s3_storage, clamd_server):
    return s3_storage


def api_upload(api, user, room, content: bytes, name: str = "file.bin") -> dict:
    response = api.post(
        f"/rooms/{room}/files",
        user,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(content), name, "application/octet-stream")},
    )
    assert response.status_code == 202, response.json
    return response.json


def processed(file_id: int) -> None:
    from veza.files import pipeline

    pipeline.run_all(file_id)


def blob_key(content: bytes) -> str:
    sha = hashlib.sha256(content).hexdigest()
    return f"blobs/{sha[:2]}/{sha[2:4]}/{sha}"


def scratch_files() -> list[Path]:
    """What the workers' steps left on this machine's disk, besides the
    cache of what they fetched."""
    root = Path(os.environ["STORAGE_DIR"])
    cache = root / "tmp" / "cache"
    return [p for p in root.rglob("*") if p.is_file() and cache not in p.parents]


def test_an_upload_lives_in_the_bucket_through_every_step_and_is_streamed_back(api, s3, seaweedfs):
    alice = api.register()
    room = api.room(alice)
    image = encoded(gradient(900, 600), "PNG")
    before = scratch_files()
    file = api_upload(api, alice, room, image, "photo.png")
    assert bucket_keys(seaweedfs, s3.prefix) == {f"uploads/{file['uuid']}"}

    processed(file["id"])

    sha = hashlib.sha256(image).hexdigest()
    # 900x600: within 400 (400x267), and within 1280 (900x600 as it is).
    renditions = {f"thumbs/{sha}-400.webp", f"thumbs/{sha}-1280.webp"}
    assert bucket_keys(seaweedfs, s3.prefix) == {blob_key(image), *renditions}
    assert scratch_files() == before  # every step's copy went with the step
    response = api.get(f"/files/{file['uuid']}/content", alice)
    assert response.status_code == 200
    assert response.data == image
    assert response.headers["Content-Length"] == str(len(image))
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"] == "attachment; filename=photo.png"
    assert response.headers["Content-Security-Policy"] == "sandbox"
    thumbnail = api.get(f"/files/{file['uuid']}/thumbnail", alice)
    assert thumbnail.status_code == 200
    assert Image.open(io.BytesIO(thumbnail.data)).size == (400, 267)


def test_identical_uploads_share_one_object_which_goes_with_the_last_row(api, mdb, s3, seaweedfs):
    alice = api.register()
    room = api.room(alice)
    content = b"the same minutes, uploaded twice\n"
    first, second = (api_upload(api, alice, room, content, "m.txt") for _ in range(2))
    processed(first["id"])
    processed(second["id"])
    assert bucket_keys(seaweedfs, s3.prefix) == {blob_key(content)}
    assert row(mdb, first["id"])["file_path"] == row(mdb, second["id"])["file_path"]

    mdb.execute(
        "UPDATE files SET expires_at = now() - interval '1 hour' WHERE id = %s", (first["id"],)
    )
    run_task("maintenance.purge_expired_files")
    assert bucket_keys(seaweedfs, s3.prefix) == {blob_key(content)}  # the other row holds it

    mdb.execute(
        "UPDATE files SET expires_at = now() - interval '1 hour' WHERE id = %s", (second["id"],)
    )
    run_task("maintenance.purge_expired_files")
    assert bucket_keys(seaweedfs, s3.prefix) == set()


def test_infected_content_leaves_the_served_keys_for_quarantine(api, db, s3, seaweedfs):
    alice = api.register()
    room = api.room(alice)
    file = api_upload(api, alice, room, EICAR, "eicar.com")
    processed(file["id"])

    sha = hashlib.sha256(EICAR).hexdigest()
    assert bucket_keys(seaweedfs, s3.prefix) == {f"quarantine/{sha}"}
    assert row(db, file["id"])["virus_scan_status"] == "infected"
    assert api.get(f"/files/{file['uuid']}/content", alice).status_code == 403


def test_redirect_hands_out_a_presigned_url_only_after_a_clean_scan(
    api, db, s3, seaweedfs, environment
):
    environment(S3_SERVE="redirect", S3_PRESIGN_SECONDS="30")
    alice = api.register()
    room = api.room(alice)
    content = b"quarterly numbers\n"
    file = api_upload(api, alice, room, content, "numbers.txt")
    assert api.get(f"/files/{file['uuid']}/content", alice).status_code == 409  # not scanned

    processed(file["id"])
    response = api.get(f"/files/{file['uuid']}/content", alice)
    assert response.status_code == 302
    fetched = requests.get(response.headers["Location"], timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == content
    assert fetched.headers["Content-Disposition"] == "attachment; filename=numbers.txt"
    assert fetched.headers["Content-Type"] == "text/plain"
    assert requests.get(response.headers["Location"] + "x", timeout=10).status_code == 403

    # Found infected later (new signatures): the scan moves the content to
    # quarantine/, and the URL handed out no longer reaches the bytes.
    s3.quarantine(hashlib.sha256(content).hexdigest())
    assert requests.get(response.headers["Location"], timeout=10).status_code == 404


def test_the_orphan_sweep_works_both_ways_and_spares_what_is_young(
    mdb, s3, seaweedfs, environment, monkeypatch
):
    from veza.storage import s3 as s3_module

    monkeypatch.setattr(s3_module, "LIST_PAGE_SIZE", 2)  # several pages for a few keys
    owner = make_user(mdb)
    kept, orphan = b"kept content", b"orphan content"
    sha = {name: hashlib.sha256(c).hexdigest() for name, c in (("kept", kept), ("orphan", orphan))}
    for content in (kept, orphan):
        with s3.atomic_writer(blob_key(content)) as out:
            out.write(content)
    for name in ("kept", "orphan"):
        with s3.atomic_writer(s3.rendition_path(sha[name], 400, False)) as out:
            out.write(b"webp")
    stale_upload = "uploads/0b6f8c3e-7f7e-4f5e-9d7f-2c5a3f1b9a10"
    with s3.atomic_writer(stale_upload) as out:
        out.write(b"cut off")
    kept_id = upload(mdb, owner, kept)  # uploads/<uuid>, then its row
    mdb.execute(
        "UPDATE files SET file_hash = %s, file_path = %s, created_at = now() - interval '2 hours'"
        " WHERE id = %s",
        (sha["kept"], blob_key(kept), kept_id),
    )
    missing_id = upload(mdb, owner, b"gone")
    mdb.execute(
        "UPDATE files SET file_hash = %s, file_path = %s, created_at = now() - interval '2 hours'"
        " WHERE id = %s",
        ("9" * 64, blob_key(b"never stored"), missing_id),
    )
    everything = bucket_keys(seaweedfs, s3.prefix)

    young = run_task("maintenance.purge_expired_files")  # the default grace: an hour
    assert bucket_keys(seaweedfs, s3.prefix) == everything  # objects: all young
    assert young["counts"].get("orphans_removed", 0) == 0
    # Rows: two hours old, one with no object behind it.
    failed = row(mdb, missing_id)
    assert failed["processing_status"] == "failed"
    assert "missing" in failed["metadata"]["failure_reason"]
    assert young["counts"]["blobs_missing"] == 1

    environment(ORPHAN_GRACE_SECONDS="0")
    time.sleep(1.1)  # LastModified has whole seconds
    result = run_task("maintenance.purge_expired_files")
    assert bucket_keys(seaweedfs, s3.prefix) == {
        blob_key(kept),
        s3.rendition_path(sha["kept"], 400, False),
        s3.upload_path(row(mdb, kept_id)["uuid"]),
        s3.upload_path(row(mdb, missing_id)["uuid"]),
    }
    assert result["counts"]["orphans_removed"] == 2  # the orphan's content, the stale upload


def test_a_large_upload_goes_up_in_parts_and_one_over_the_limit_leaves_nothing(s3, seaweedfs):
    import uuid

    from veza.storage import UploadTooLarge
    from veza.storage.s3 import MULTIPART_PART_BYTES

    content = os.urandom(2 * MULTIPART_PART_BYTES + 12345)
    relative, size = s3.save_upload(io.BytesIO(content), uuid.uuid4(), len(content))
    assert size == len(content)
    head = seaweedfs.client().head_object(Bucket=BUCKET, Key=s3.key(relative))
    assert head["ContentLength"] == len(content)
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    with s3.open(relative).stream as stored:
        assert hashlib.sha256(stored.read()).digest() == hashlib.sha256(content).digest()

    with pytest.raises(UploadTooLarge):
        s3.save_upload(io.BytesIO(content), uuid.uuid4(), len(content) - 1)
    assert bucket_keys(seaweedfs, s3.prefix) == {relative}
    uploads = seaweedfs.client().list_multipart_uploads(Bucket=BUCKET, Prefix=s3.prefix)
    assert uploads.get("Uploads", []) == []


def test_debris_goes_once_older_than_the_grace_a_fresh_one_stays(s3, seaweedfs):
    client = seaweedfs.client()
    started = client.create_multipart_upload(Bucket=BUCKET, Key=s3.key("uploads/cut-off"))
    scratch = Path(os.environ["STORAGE_DIR"]) / "tmp"
    scratch.mkdir(exist_ok=True)
    dead_copy = scratch / "dead-step-copy"
    dead_copy.write_bytes(b"x")

    assert s3.remove_debris(time.time() - 3600, dry_run=False) == 0
    assert dead_copy.exists()
    assert s3.remove_debris(time.time() + 5, dry_run=True) == 2
    assert dead_copy.exists()
    assert s3.remove_debris(time.time() + 5, dry_run=False) == 2
    assert not dead_copy.exists()
    uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix=s3.prefix).get("Uploads", [])
    assert started["UploadId"] not in {u["UploadId"] for u in uploads}


def test_storage_migrate_copies_the_local_store_once_and_resumes(db, s3, seaweedfs, tmp_path):
    import json

    from tests.processes import veza
    from veza.storage import LocalStorage

    local = LocalStorage(tmp_path)
    stored = {
        blob_key(b"a blob"): b"a blob",
        "thumbs/" + "a" * 64 + ".webp": b"a thumbnail",
        "quarantine/" + "b" * 64: EICAR,
        "uploads/0b6f8c3e-7f7e-4f5e-9d7f-2c5a3f1b9a10": b"an upload not hashed yet",
    }
    for relative, content in stored.items():
        with local.atomic_writer(relative) as out:
            out.write(content)
    (tmp_path / "tmp" / "debris").write_bytes(b"a dead writer's")

    def migrate(*flags: str) -> tuple[dict, str]:
        done = veza("storage", "migrate", "--to", "s3", *flags, STORAGE_DIR=str(tmp_path))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout), done.stderr

    dry, _ = migrate("--dry-run")
    assert (dry["files_total"], dry["copied"], dry["dry_run"]) == (4, 0, True)
    assert bucket_keys(seaweedfs, s3.prefix) == set()

    first, progress = migrate()
    assert (first["copied"], first["already_there"], first["failed"]) == (4, 0, [])
    assert first["bytes_copied"] == sum(len(content) for content in stored.values())
    assert '"progress"' in progress
    assert bucket_keys(seaweedfs, s3.prefix) == set(stored)
    for relative, content in stored.items():
        with s3.open(relative).stream as body:
            assert body.read() == content

    again, _ = migrate()
    assert (again["copied"], again["already_there"]) == (0, 4)

    # Cut off: one object lost, one local file grown since; the next run
    # copies exactly those two.
    s3.remove(blob_key(b"a blob"))
    with local.atomic_writer("uploads/0b6f8c3e-7f7e-4f5e-9d7f-2c5a3f1b9a10") as out:
        out.write(b"an upload not hashed yet, longer now")
    resumed, _ = migrate()
    assert (resumed["copied"], resumed["already_there"]) == (2, 2)
    audited = db.execute(
        "SELECT count(*) FROM audit_logs WHERE event_type = 'storage.migrated'"
    ).fetchone()[0]
    assert audited == 3  # each real run, not the dry one


def test_the_scratch_cache_serves_a_machine_s_next_step_and_stays_within_its_bound(
    s3, seaweedfs, environment, tmp_path
):
    from veza.storage import get_storage

    with s3.atomic_writer("uploads/a") as out:
        out.write(b"a" * 1024)
    with s3.local_copy("uploads/a") as first:
        assert first.read_bytes() == b"a" * 1024
    seaweedfs.client().delete_object(Bucket=BUCKET, Key=s3.key("uploads/a"))
    with s3.local_copy("uploads/a") as again:  # from the cache: no request
        assert again.read_bytes() == b"a" * 1024

    environment(STORAGE_DIR=str(tmp_path), S3_SCRATCH_CACHE_MIB="0")
    uncached = get_storage()
    with pytest.raises(FileNotFoundError), uncached.local_copy("uploads/a"):
        pass
    assert not (tmp_path / "tmp" / "cache").exists()

    from veza.storage.scratch_cache import ScratchCache

    cache = ScratchCache(tmp_path / "bounded", limit_bytes=3 * 1024)
    for n, name in enumerate("wxyz"):
        source = tmp_path / name
        source.write_bytes(name.encode() * 1024)
        os.utime(source, (1_000_000 + n, 1_000_000 + n))  # oldest first
        cache.keep(source, f"uploads/{name}")
    kept = sorted(p.name for p in (tmp_path / "bounded" / "uploads").iterdir())
    assert kept == ["x", "y", "z"]


def test_retention_then_the_archive_s_end_then_the_sweep_remove_the_object(
    mdb, s3, seaweedfs, environment
):
    """The peers' most common complaint (retention leaving storage behind):
    the bucket's listing before and after each stage."""
    from tests.factories import make_room

    alice = make_user(mdb)
    room = make_room(mdb, alice, "short", message_retention_days=10)
    message = mdb.execute(
        "INSERT INTO messages (room_id, author_id, content, created_at)"
        " VALUES (%s, %s, 'the slides', now() - interval '20 days') RETURNING id, created_at",
        (room, alice),
    ).fetchone()
    content = encoded(gradient(300, 200), "PNG")
    file_id = upload(mdb, alice, content, "slides.png", "image/png")
    processed(file_id)
    mdb.execute(
        "UPDATE files SET room_id = %s, message_id = %s, message_created_at = %s WHERE id = %s",
        (room, message[0], message[1], file_id),
    )
    stored = {blob_key(content), s3.rendition_path(hashlib.sha256(content).hexdigest(), 400, False)}
    assert bucket_keys(seaweedfs, s3.prefix) == stored

    run_task("maintenance.purge_retention")
    assert mdb.execute("SELECT count(*) FROM archived_files").fetchone()[0] == 1
    environment(ORPHAN_GRACE_SECONDS="0")
    time.sleep(1.1)  # LastModified has whole seconds
    run_task("maintenance.purge_expired_files")
    assert bucket_keys(seaweedfs, s3.prefix) == stored  # restorable: kept

    for table in ("archived_messages", "archived_files"):
        mdb.execute(f"UPDATE {table} SET archived_at = now() - interval '31 days'")
    run_task("maintenance.purge_retention")  # the archive's own retention
    assert mdb.execute("SELECT count(*) FROM archived_files").fetchone()[0] == 0
    swept = run_task("maintenance.purge_expired_files")
    assert bucket_keys(seaweedfs, s3.prefix) == set()
    assert swept["counts"]["orphans_removed"] == 1  # the content: blob and thumbnail


def test_a_bucket_out_of_reach_is_a_503_and_a_retried_step_never_a_failure(
    api, db, s3, environment
):
    from tests.processes import free_port
    from veza.files import pipeline
    from veza.storage import StorageUnavailable

    alice = api.register()
    room = api.room(alice)
    served = api_upload(api, alice, room, b"agenda\n", "agenda.txt")
    processed(served["id"])
    pending = api_upload(api, alice, room, b"minutes\n", "minutes.txt")
    rows = db.execute("SELECT count(*) FROM files").fetchone()[0]

    environment(S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens
    response = api.post(
        f"/rooms/{room}/files",
        alice,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(b"notes\n"), "notes.txt", "text/plain")},
    )
    assert response.status_code == 503
    assert response.json["error"]["code"] == "storage_unavailable"
    assert db.execute("SELECT count(*) FROM files").fetchone()[0] == rows  # no half-written row

    response = api.get(f"/files/{served['uuid']}/content", alice)
    assert response.status_code == 503
    assert response.json["error"]["code"] == "storage_unavailable"

    with pytest.raises(StorageUnavailable):  # the task retries it (worker/base.py)
        pipeline.hash_upload(pending["id"])
    file = row(db, pending["id"])
    assert "failure_reason" not in file["metadata"]
    assert file["processing_status"] in ("pending", "processing")


@pytest.mark.parametrize("first", ["delete", "hash"])
def test_a_delete_racing_a_new_upload_of_the_same_bytes_never_loses_them(db, s3, seaweedfs, first):
    """The hash's advisory lock, not the bucket, orders a delete of content
    no row holds and a new upload of the same bytes: whichever goes first,
    the new row's object is there."""
    import threading

    import psycopg

    from db.engine import libpq_url
    from tests.conftest import wait_for
    from veza.files import pipeline

    owner = make_user(db)
    content = b"the same bytes, deleted and uploaded at once\n"
    sha = hashlib.sha256(content).hexdigest()
    gone = upload(db, owner, content)
    processed(gone)
    db.execute("DELETE FROM files WHERE id = %s", (gone,))  # its content: unreferenced
    again = upload(db, owner, content)

    def waiters() -> int:
        return db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()[0]

    steps = {
        "delete": lambda: pipeline.delete_content_if_unreferenced(sha),
        "hash": lambda: pipeline.hash_upload(again),
    }
    order = [first, *(step for step in steps if step != first)]
    with psycopg.connect(libpq_url()) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (int(sha[:15], 16),))
        threads = []
        for n, name in enumerate(order, 1):
            threads.append(threading.Thread(target=steps[name]))
            threads[-1].start()
            wait_for(lambda n=n: waiters() == n, timeout=20, what=f"{name} to wait on the lock")
        holder.commit()  # the lock goes: the waiters go in the order they came
    for thread in threads:
        thread.join(timeout=20)

    file = row(db, again)
    assert file["file_path"] == blob_key(content)
    assert blob_key(content) in bucket_keys(seaweedfs, s3.prefix)
    processed(again)
    assert row(db, again)["processing_status"] == "completed"


def test_content_not_on_this_machine_is_streamed_to_clamd_as_it_is_fetched(
    api, db, s3, environment
):
    """With no copy on this machine (a scan on another machine than the
    hash, here: no scratch cache), clamd gets the bytes by INSTREAM while
    they come from the bucket; its log names the stream. The inspection
    after clamd's OK still reads the copy: an LZMA zip is unscannable."""
    from tests.clamav import CLAMD_DIR
    from tests.uploads import unscannable_archives

    environment(S3_SCRATCH_CACHE_MIB="0")
    alice = api.register()
    room = api.room(alice)
    log = CLAMD_DIR / "clamd.log"
    logged = log.read_text(errors="replace") if log.exists() else ""

    infected = api_upload(api, alice, room, EICAR, "eicar.txt")
    processed(infected["id"])
    assert row(db, infected["id"])["virus_scan_status"] == "infected"
    found = log.read_text(errors="replace")[len(logged) :]
    assert "Eicar-Test-Signature" in found
    assert "stream" in found  # INSTREAM, not a file's descriptor

    lzma = api_upload(api, alice, room, unscannable_archives()["lzma-harmless.zip"], "a.zip")
    processed(lzma["id"])
    failed = row(db, lzma["id"])
    assert failed["virus_scan_status"] == "failed"
    assert failed["metadata"]["failure_reason"].startswith("unscannable: ")
