"""Storage durability and a full disk: content is recorded only once it is
fsynced (file, then directory), a full disk answers 507 and leaves nothing,
a worker step that finds the disk full is recorded and retried, and the
orphan sweep removes tmp/ debris past its grace.

A full disk is real where the machine allows it: a 1 MiB tmpfs mounted over
this run's STORAGE_DIR for the length of one test (the files of other tests
are hidden meanwhile and back after the unmount). Failures of fsync itself
(EIO, or ENOSPC from delayed allocation) cannot be had from a tmpfs, so they
are injected at the one place storage calls fsync, `veza.storage.local._fsync`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.api_helpers import error_code
from tests.clamav import EICAR
from tests.conftest import ROOT, start_worker, wait_for
from tests.factories import make_user
from tests.maintenance_helpers import run_task
from tests.uploads import encoded, gradient, row, upload

STORAGE = Path(os.environ["STORAGE_DIR"])
GRACE = 3600  # ORPHAN_GRACE_SECONDS' default, which the sweep reads


def stored_files() -> dict[str, int]:
    """Every file under STORAGE_DIR, with its size."""
    return {
        str(path.relative_to(STORAGE)): path.stat().st_size
        for path in STORAGE.rglob("*")
        if path.is_file()
    }


def free_blocks() -> int:
    return os.statvfs(STORAGE).f_bfree


def fill_disk() -> Path:
    """Take every free block of the storage filesystem."""
    filler = STORAGE / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(bytes(4096))
        except OSError as exc:  # the disk is full: what the filler is for
            assert exc.errno == errno.ENOSPC, exc  # noqa: PT017  (set-up, not the test's subject)
    return filler


@pytest.fixture
def small_disk():
    """STORAGE_DIR on a 1 MiB tmpfs for this test."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(STORAGE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}): "
            "the injected-ENOSPC tests cover the same paths"
        )
    try:
        yield
    finally:
        subprocess.run(["umount", str(STORAGE)], check=True)


@pytest.fixture
def failing_fsync(monkeypatch):
    """failing_fsync(predicate, error): every fsync of a path (relative to
    STORAGE_DIR, "." for the root) the predicate accepts raises `error`."""
    from veza.storage import local as storage_module

    real = storage_module._fsync

    def install(predicate, error: int = errno.EIO):
        def fsync(path: Path) -> None:
            relative = Path(os.path.relpath(path, STORAGE)).as_posix()
            if predicate(relative):
                raise OSError(error, os.strerror(error), str(path))
            real(path)

        monkeypatch.setattr(storage_module, "_fsync", fsync)

    return install


def upload_through_api(api, user, room, content: bytes):
    return api.post(
        f"/rooms/{room}/files",
        user,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(content), "notes.txt", "text/plain")},
    )


def rows_and_outbox(db) -> tuple[int, int]:
    return db.execute(
        "SELECT (SELECT count(*) FROM files), (SELECT count(*) FROM outbox)"
    ).fetchone()


# ------------------------------------------------------------ full disk, API


def test_a_full_disk_answers_507_leaves_nothing_and_a_later_upload_works(api, db, small_disk):
    alice = api.register()
    room = api.room(alice)
    free_before = free_blocks()

    response = upload_through_api(api, alice, room, os.urandom(2 * 1024 * 1024))

    assert response.status_code == 507
    assert response.json["error"]["code"] == "insufficient_storage"
    assert set(response.json["error"]) == {"code", "message", "fields"}
    assert stored_files() == {}  # no partial file in tmp/, uploads/ or blobs/
    assert free_blocks() == free_before  # nor one unlinked and still open
    assert rows_and_outbox(db) == (0, 0)

    content = os.urandom(100 * 1024)
    later = upload_through_api(api, alice, room, content)
    assert later.status_code == 202
    assert (STORAGE / f"uploads/{later.json['uuid']}").read_bytes() == content
    assert rows_and_outbox(db) == (1, 1)


def test_an_upload_whose_fsync_finds_the_disk_full_answers_507_and_leaves_nothing(
    api, db, failing_fsync
):
    """Delayed allocation: every write was accepted, the fsync says ENOSPC."""
    alice = api.register()
    room = api.room(alice)
    before = stored_files()
    failing_fsync(lambda relative: relative.startswith("tmp/"), errno.ENOSPC)

    response = upload_through_api(api, alice, room, b"minutes of the meeting\n" * 100)

    assert response.status_code == 507
    assert error_code(response) == "insufficient_storage"
    assert stored_files() == before
    assert rows_and_outbox(db) == (0, 0)


# --------------------------------------------------------- full disk, worker


@pytest.mark.slow
def test_a_thumbnail_that_finds_the_disk_full_is_recorded_then_retried_once_space_is_freed(
    db, clamd_server, small_disk
):
    """The worker's step, on a real full filesystem: the file stays in
    processing (no permanent failure), says why, and completes by itself
    after an operator frees space."""
    file_id = upload(db, make_user(db), encoded(gradient(600, 400), "PNG"), "p.png", "image/png")
    filler = fill_disk()
    worker = start_worker("storage-full", queues="files,scan")
    try:
        from worker import app

        app.send_task("files.process", args=[file_id])
        wait_for(
            lambda: "last_storage_error" in row(db, file_id)["metadata"],
            timeout=60,
            what="the thumbnail step to record the full disk",
        )
        file = row(db, file_id)
        assert file["metadata"]["last_storage_error"]["step"] == "thumbnail"
        assert "No space left" in file["metadata"]["last_storage_error"]["error"]
        assert (file["processing_status"], file["thumbnail_path"]) == ("processing", None)
        assert "failure_reason" not in file["metadata"]

        filler.unlink()
        wait_for(
            lambda: row(db, file_id)["processing_status"] == "completed",
            timeout=120,
            what="the retried thumbnail to complete the file",
        )
    finally:
        worker.stop()
    file = row(db, file_id)
    assert file["is_processed"]
    assert file["thumbnail_path"] == f"thumbs/{file['file_hash']}-400.webp"
    with Image.open(STORAGE / file["thumbnail_path"]) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (400, 267))
    # Every failed attempt removed its temporary file; the last one renamed its own.
    assert not any(path.startswith("tmp/") for path in stored_files())


# ----------------------------------------------------------------- fsync


def infected_zip() -> bytes:
    """EICAR inside an archive with a unique member: new content each time
    (the test clamd's one signature matches EICAR's exact bytes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", os.urandom(16).hex())
        archive.writestr("eicar.com", EICAR)
    return out.getvalue()


def unique_png() -> bytes:
    return encoded(gradient(300, 200), "PNG") + os.urandom(8)  # bytes after IEND


def recorded(step: str, file: dict) -> bool:
    """Has the database recorded the step's write as done?"""
    if step == "hash":
        return file["file_hash"] is not None
    if step == "thumbnail":
        return file["thumbnail_path"] is not None
    return file["virus_scan_status"] == "infected"


# Which fsync fails, by the path it syncs (relative to STORAGE_DIR), given
# the upload's path and the blob's.
FSYNCS = {
    "the upload, before the blob name links to it": lambda p, upload, blob: p == upload,
    "the blob's directory": lambda p, upload, blob: p == str(Path(blob).parent),
    "the directory made above it": lambda p, upload, blob: p == str(Path(blob).parent.parent),
    "the temporary file, before its rename": lambda p, upload, blob: p.startswith("tmp/"),
    "thumbs/": lambda p, upload, blob: p == "thumbs",
    "quarantine/": lambda p, upload, blob: p == "quarantine",
    "the served directory that must stop naming it": lambda p, upload, blob: (
        p == str(Path(blob).parent)
    ),
}


@pytest.mark.parametrize(
    ("step", "failing"),
    [
        ("hash", "the upload, before the blob name links to it"),
        ("hash", "the blob's directory"),
        ("hash", "the directory made above it"),
        ("thumbnail", "the temporary file, before its rename"),
        ("thumbnail", "thumbs/"),
        ("quarantine", "quarantine/"),
        ("quarantine", "the served directory that must stop naming it"),
    ],
)
def test_content_is_recorded_only_once_its_file_and_directories_are_fsynced(
    db, clamd_server, failing_fsync, step, failing
):
    """An fsync that fails means the write is not recorded, so the step
    must fsync before it commits; once fsync works the step records it,
    with the whole content in place."""
    from veza.files import pipeline
    from veza.storage import get_storage

    storage = get_storage()

    content = infected_zip() if step == "quarantine" else unique_png()
    file_id = upload(db, make_user(db), content, "f.png", "image/png")
    upload_path = row(db, file_id)["file_path"]
    blob = storage.blob_path(hashlib.sha256(content).hexdigest())
    before = {
        "hash": [],
        "thumbnail": [pipeline.hash_upload, pipeline.sniff, pipeline.scan],
        "quarantine": [pipeline.hash_upload, pipeline.sniff],
    }[step]
    for earlier in before:
        earlier(file_id)
    write = {
        "hash": pipeline.hash_upload,
        "thumbnail": pipeline.thumbnail,
        "quarantine": pipeline.scan,
    }[step]

    failing_fsync(lambda p: FSYNCS[failing](p, upload_path, blob))
    with pytest.raises(OSError):  # noqa: PT011  (whatever the injected fsync failure raises)
        write(file_id)
    assert not recorded(step, row(db, file_id))

    failing_fsync(lambda p: False)
    write(file_id)
    file = row(db, file_id)
    assert recorded(step, file)
    assert (STORAGE / file["file_path"]).read_bytes() == content
    if step == "thumbnail":
        with Image.open(STORAGE / file["thumbnail_path"]) as thumbnail:
            assert thumbnail.size == (300, 200)
    if step == "quarantine":
        assert file["file_path"] == f"quarantine/{file['file_hash']}"
        assert not (STORAGE / blob).exists()


# ------------------------------------------------------------ tmp/ sweep

DYING_WRITER = textwrap.dedent("""
    import os
    from veza.storage import get_storage

    storage = get_storage()
    with storage.atomic_writer("thumbs/never.webp") as out:
        out.write(b"half a thumbnail")
        out.flush()
        os._exit(1)  # killed mid-write: no cleanup runs
""")


def aged(path: Path, seconds: float) -> Path:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))
    return path


def test_tmp_debris_older_than_the_grace_is_swept_and_counted_and_younger_files_are_kept(mdb):
    tmp = STORAGE / "tmp"
    tmp.mkdir(exist_ok=True)
    before = set(tmp.iterdir())
    dying = subprocess.run([sys.executable, "-c", DYING_WRITER], cwd=ROOT, check=False)
    assert dying.returncode == 1
    (dead_writer,) = set(tmp.iterdir()) - before
    assert dead_writer.read_bytes() == b"half a thumbnail"
    aged(dead_writer, 2 * GRACE)
    debris = {name: tmp / name for name in ("old_upload", "just_inside", "fresh")}
    for path in debris.values():
        path.write_bytes(b"the first bytes of an upload")
    old_upload = aged(debris["old_upload"], GRACE + 60)
    just_inside = aged(debris["just_inside"], GRACE - 60)
    fresh = debris["fresh"]

    dry = run_task("maintenance.purge_expired_files", dry_run=True)
    assert dry["counts"]["tmp_removed"] == 2
    assert dead_writer.exists()
    assert old_upload.exists()

    result = run_task("maintenance.purge_expired_files")

    assert result["counts"]["tmp_removed"] == 2
    assert not dead_writer.exists()
    assert not old_upload.exists()
    assert just_inside.exists()
    assert fresh.exists()
    again = run_task("maintenance.purge_expired_files")
    assert again["counts"]["tmp_removed"] == 0
