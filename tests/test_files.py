"""The file pipeline's steps, run in this process against a real clamd,
PostgreSQL and storage directory."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from tests.clamav import EICAR, EICAR_SIGNATURE
from tests.conftest import ROOT, wait_for
from tests.factories import make_user
from tests.uploads import (
    animated_gif,
    eicar_zip,
    encoded,
    gradient,
    jpeg_rotated_with_gps,
    png_header_only,
    row,
    upload,
    zip_of_zeros,
)


@pytest.fixture
def user(db, clamd_server) -> int:
    return make_user(db)


def process(file_id: int) -> None:
    from veza.files import pipeline

    pipeline.run_all(file_id)


def storage_root() -> Path:
    from veza.storage import get_storage

    storage = get_storage()

    return storage.root


def thumbnail_of(file: dict) -> Image.Image:
    image = Image.open(storage_root() / file["thumbnail_path"])
    image.load()
    return image


@pytest.mark.parametrize(
    ("name", "content", "mime", "size", "frames"),
    [
        ("photo.jpg", encoded(gradient(1200, 900), "JPEG"), "image/jpeg", (400, 300), 1),
        ("drawing.png", encoded(gradient(300, 200), "PNG"), "image/png", (300, 200), 1),
        ("still.gif", encoded(gradient(500, 100).convert("P"), "GIF"), "image/gif", (400, 80), 1),
        ("animated.gif", animated_gif(3), "image/gif", (120, 80), 3),
        ("picture.webp", encoded(gradient(640, 640), "WEBP"), "image/webp", (400, 400), 1),
        ("old.bmp", encoded(gradient(90, 60), "BMP"), "image/bmp", (90, 60), 1),
        ("dot.png", encoded(Image.new("RGB", (1, 1)), "PNG"), "image/png", (1, 1), 1),
        ("line.png", encoded(Image.new("L", (20000, 1)), "PNG"), "image/png", (400, 1), 1),
    ],
)
def test_a_clean_image_gets_a_webp_thumbnail_within_400px_never_upscaled(
    db, user, name, content, mime, size, frames
):
    file_id = upload(db, user, content, name, mime)
    process(file_id)

    file = row(db, file_id)
    assert file["processing_status"] == "completed"
    assert file["is_processed"]
    assert file["virus_scan_status"] == "clean"
    assert file["virus_scan_result"] is None
    assert file["mime_type"] == mime
    assert file["metadata"]["mime_mismatch"] is False
    assert file["file_hash"] == hashlib.sha256(content).hexdigest()
    original = Image.open(io.BytesIO(content))
    image = dict(file["metadata"]["image"])
    pdq, pdq_quality = image.pop("pdq"), image.pop("pdq_quality")
    assert image == {
        "width": original.width,
        "height": original.height,
        "format": original.format,
        "frame_count": frames,
    }
    assert re.fullmatch("[0-9a-f]{64}", pdq)  # the blocklist's hash (test_image_blocklist.py)
    assert 0 <= pdq_quality <= 100
    thumb = thumbnail_of(file)
    assert thumb.format == "WEBP"
    assert thumb.size == size
    assert getattr(thumb, "n_frames", 1) == 1  # an animation becomes a still
    assert file["metadata"]["clamd_version"].startswith("ClamAV")


def test_exif_orientation_is_applied_and_gps_does_not_reach_the_thumbnail(db, user):
    file_id = upload(db, user, jpeg_rotated_with_gps(), "holiday.jpg", "image/jpeg")
    process(file_id)

    file = row(db, file_id)
    thumb = thumbnail_of(file).convert("RGB")
    # 800x400 with "rotate 90° clockwise": portrait, the red left half on top.
    assert thumb.size == (200, 400)
    red, _green, blue = thumb.getpixel((100, 50))
    assert red > 200
    assert blue < 60
    assert not thumb.getexif()
    assert "exif" not in thumb.info
    assert "xmp" not in thumb.info
    # Converted to sRGB from the profile, which stays behind with the rest.
    assert "icc_profile" not in thumbnail_of(file).info
    # The original keeps its metadata: it is the user's file.
    assert file["metadata"]["image"]["width"] == 800


@pytest.mark.parametrize(
    ("name", "content", "claimed"),
    [
        ("eicar.txt", EICAR, "text/plain"),
        ("archive.zip", eicar_zip(), "application/zip"),
        ("photo.jpg", EICAR, "image/jpeg"),
    ],
)
def test_infected_content_is_quarantined_refused_and_audited(db, user, name, content, claimed):
    file_id = upload(db, user, content, name, claimed)
    process(file_id)

    file = row(db, file_id)
    assert file["virus_scan_status"] == "infected"
    assert file["virus_scan_result"].startswith(EICAR_SIGNATURE)
    assert file["processing_status"] == "failed"
    assert file["is_processed"]
    assert file["metadata"]["failure_reason"] == f"infected: {file['virus_scan_result']}"
    assert file["thumbnail_path"] is None
    sha256 = hashlib.sha256(content).hexdigest()
    assert file["file_path"] == f"quarantine/{sha256}"
    assert (storage_root() / file["file_path"]).read_bytes() == content
    assert not list((storage_root() / "blobs").rglob(sha256))
    audit = db.execute(
        "SELECT severity, event_type, resource_id, user_id, event_data->>'signature'"
        " FROM audit_logs"
    ).fetchall()
    assert audit == [("critical", "file.infected", file_id, user, file["virus_scan_result"])]


def test_an_archive_too_large_to_scan_fails_the_scan_and_is_neither_clean_nor_infected(db, user):
    """With AlertExceedsMax, clamd answers Heuristics.Limits.Exceeded.MaxScanSize
    FOUND for a harmless archive that expands past its MaxScanSize (110M here)."""
    content = zip_of_zeros(120)
    file_id = upload(db, user, content, "backup.zip", "application/zip")
    process(file_id)

    file = row(db, file_id)
    assert (file["virus_scan_status"], file["processing_status"]) == ("failed", "failed")
    assert file["metadata"]["failed_step"] == "scan"
    # clamd's Heuristics.Limits.Exceeded.MaxScanSize, in our inspection's words.
    assert file["metadata"]["failure_reason"] == (
        "unscannable: expands beyond the scanner's limit of 110 MiB"
    )
    assert file["file_path"].startswith("blobs/")  # not quarantined
    assert db.execute("SELECT event_type, severity::text FROM audit_logs").fetchall() == [
        ("file.unscannable", "warning")
    ]


def test_a_claimed_type_that_differs_from_the_content_is_flagged(db, user):
    file_id = upload(db, user, b"just some notes\n", "cat.png", "image/png")
    process(file_id)

    file = row(db, file_id)
    assert file["mime_type"] == "text/plain"
    assert file["metadata"]["claimed_mime_type"] == "image/png"
    assert file["metadata"]["mime_mismatch"] is True
    # Not an image by content: completed after the scan, without a thumbnail.
    assert file["processing_status"] == "completed"
    assert file["thumbnail_path"] is None


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("cut.jpg", encoded(gradient(1600, 1200), "JPEG")[:6000], "corrupt or truncated"),
        ("bomb.png", png_header_only(30000, 30000), "pixel"),
        ("wide.png", png_header_only(60000, 1000), "pixel limit"),
        ("logo.svg", SVG, "unsupported image format image/svg+xml"),
    ],
)
def test_bad_images_fail_with_a_reason_and_leave_no_thumbnail(db, user, name, content, reason):
    file_id = upload(db, user, content, name, "image/png")
    process(file_id)

    file = row(db, file_id)
    assert file["processing_status"] == "failed"
    assert file["is_processed"]
    assert file["metadata"]["failed_step"] == "thumbnail"
    assert reason in file["metadata"]["failure_reason"]
    assert file["virus_scan_status"] == "clean"  # the scan ran; only the image is bad
    assert file["thumbnail_path"] is None
    assert not list((storage_root() / "thumbs").glob(f"{file['file_hash']}*"))


def test_a_size_mismatch_fails_the_upload_without_storing_it(db, user):
    file_id = upload(db, user, b"twelve bytes")
    db.execute("UPDATE files SET file_size = 4096 WHERE id = %s", (file_id,))
    process(file_id)

    file = row(db, file_id)
    assert file["processing_status"] == "failed"
    assert file["file_hash"] is None
    assert file["metadata"]["failure_reason"] == (
        "size mismatch: the upload said 4096 bytes, 12 arrived"
    )
    assert file["virus_scan_status"] == "pending"  # never scanned, so never clean


def test_a_row_deleted_while_its_upload_is_being_hashed_is_left_alone(db, user, database_url):
    """Deleted (say, its message removed) after hash_upload read it: nothing
    to do and nothing to raise. The delete is made to land in that window by
    holding the row's lock until hash_upload waits on it."""
    import threading

    import psycopg

    from db.engine import libpq_url
    from veza.files import pipeline
    from veza.storage import get_storage

    storage = get_storage()

    file_id = upload(db, user, b"a note")
    storage.remove(row(db, file_id)["file_path"])  # and its upload is gone too
    errors: list[BaseException] = []

    def hash_it() -> None:
        try:
            pipeline.hash_upload(file_id)
        except BaseException as exc:  # noqa: BLE001 (reported by the assert below)
            errors.append(exc)

    with psycopg.connect(libpq_url()) as holder:
        holder.execute("SELECT 1 FROM files WHERE id = %s FOR UPDATE", (file_id,))
        worker = threading.Thread(target=hash_it)
        worker.start()
        wait_for(
            lambda: db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'SELECT files.%%FOR UPDATE'"
            ).fetchone()[0],
            what="hash_upload to wait",
        )
        holder.execute("DELETE FROM files WHERE id = %s", (file_id,))
        holder.commit()
    worker.join(30)
    assert errors == []
    assert db.execute("SELECT count(*) FROM files").fetchone() == (0,)


def test_identical_uploads_share_one_blob_and_each_keeps_its_row(db, user):
    content = encoded(gradient(200, 100), "PNG")
    first, second = upload(db, user, content, "a.png"), upload(db, user, content, "b.png")
    process(first)
    process(second)

    a, b = row(db, first), row(db, second)
    assert a["file_path"] == b["file_path"]
    assert a["thumbnail_path"] == b["thumbnail_path"]
    assert a["original_filename"] == "a.png"
    assert b["original_filename"] == "b.png"
    blobs = [p for p in (storage_root() / "blobs").rglob("*") if p.is_file()]
    assert blobs.count(storage_root() / a["file_path"]) == 1
    assert not (storage_root() / "uploads" / str(a["uuid"])).exists()
    assert not (storage_root() / "uploads" / str(b["uuid"])).exists()


def test_a_blob_is_deleted_only_when_no_row_references_it(db, user):
    from veza.files import pipeline

    content = encoded(gradient(64, 64), "PNG")
    first, second = upload(db, user, content), upload(db, user, content)
    process(first)
    process(second)
    file = row(db, first)
    blob, thumb = storage_root() / file["file_path"], storage_root() / file["thumbnail_path"]

    db.execute("DELETE FROM files WHERE id = %s", (first,))
    assert not pipeline.delete_content_if_unreferenced(file["file_hash"])
    assert blob.exists()
    assert thumb.exists()
    db.execute("DELETE FROM files WHERE id = %s", (second,))
    assert pipeline.delete_content_if_unreferenced(file["file_hash"])
    assert not blob.exists()
    assert not thumb.exists()


def test_running_the_pipeline_twice_changes_nothing(db, user):
    file_ids = [
        upload(db, user, jpeg_rotated_with_gps(), "a.jpg", "image/jpeg"),
        upload(db, user, EICAR, "b.txt", "text/plain"),
        upload(db, user, b"plain words", "c.txt", "text/plain"),
    ]
    for file_id in file_ids:
        process(file_id)
    before = [row(db, file_id) for file_id in file_ids]
    files_before = sorted(p for p in storage_root().rglob("*") if p.is_file())

    for file_id in file_ids:
        process(file_id)

    assert [row(db, file_id) for file_id in file_ids] == before
    assert sorted(p for p in storage_root().rglob("*") if p.is_file()) == files_before
    assert db.execute("SELECT count(*) FROM audit_logs").fetchone()[0] == 1


@pytest.mark.parametrize("name", ["фото отпуск 🌴.png", "../../../etc/passwd", "..\\..\\x.png"])
def test_filenames_never_decide_where_content_is_stored(db, user, name):
    content = encoded(gradient(30, 20), "PNG")
    file_id = upload(db, user, content, name, "image/png")
    process(file_id)

    file = row(db, file_id)
    assert file["processing_status"] == "completed"
    assert file["original_filename"] == name
    sha256 = hashlib.sha256(content).hexdigest()
    assert file["file_path"] == f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"
    assert file["thumbnail_path"] == f"thumbs/{sha256}-400.webp"


def scan_with_clamd_down(clamd_server, caplog, file_id: int) -> int:
    """Run files.scan eagerly (every retry at once, countdowns skipped) with
    clamd stopped; return how many attempts the pipeline logged."""
    from tasks.files import scan

    clamd_server.stop()
    try:
        scan.apply(args=[file_id])
    finally:
        clamd_server.start()
    return len(
        [
            r
            for r in caplog.records
            if r.name == "veza.files.pipeline" and "clamd VERSION failed" in r.getMessage()
        ]
    )


def test_without_clamd_the_scan_retries_then_fails_and_never_passes(db, user, clamd_server, caplog):
    from tasks.files import scan
    from veza.files import pipeline

    file_id = upload(db, user, b"harmless text", "note.txt", "text/plain")
    pipeline.hash_upload(file_id)
    assert scan_with_clamd_down(clamd_server, caplog, file_id) == scan.max_retries + 1
    file = row(db, file_id)
    assert file["virus_scan_status"] == "failed"
    assert file["processing_status"] == "failed"
    assert not file["is_processed"]
    # What clients see: no socket path, no clamd error text (that is logged).
    assert file["virus_scan_result"] == "the virus scanner is unavailable"

    # A later scan (the maintenance job's) gets the verdict and finishes the file.
    process(file_id)
    file = row(db, file_id)
    assert file["virus_scan_status"] == "clean"
    assert file["processing_status"] == "completed"
    assert file["virus_scan_result"] is None
    assert file["is_processed"]


# Run in a fresh process, measured by VmHWM (the peak RSS since exec;
# ru_maxrss would carry pytest's own peak over into the child).
MEMORY_PROBE = textwrap.dedent("""
    import sys
    from veza.files import pipeline
    from veza.clamav import Scanner
    def high_water_kib():
        return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    scanner = Scanner()
    scanner.version()                      # imports and connections warmed up
    pipeline._load(int(sys.argv[1]))
    before = high_water_kib()
    pipeline.hash_upload(int(sys.argv[1]))
    pipeline.scan(int(sys.argv[1]), scanner)
    print(high_water_kib() - before)
""")


def peak_growth_in_fresh_process(probe: str, file_id: int) -> int:
    """Run `probe` (a script printing its peak RSS growth in KiB last) on
    the file in a fresh interpreter, so that nothing this process already
    holds counts."""
    result = subprocess.run(
        [sys.executable, "-c", probe, str(file_id)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_100_mb_upload_is_hashed_and_scanned_in_constant_memory(db, user):
    from veza.storage import get_storage

    storage = get_storage()

    block = os.urandom(1024 * 1024)
    size = 100 * 1000 * 1000
    file_id = upload(db, user, b"x")  # the row; the content is written next
    file = row(db, file_id)
    digest = hashlib.sha256()
    with open(storage.absolute(file["file_path"]), "wb") as out:
        for offset in range(0, size, len(block)):
            piece = block[: size - offset]
            out.write(piece)
            digest.update(piece)
    db.execute("UPDATE files SET file_size = %s WHERE id = %s", (size, file_id))

    peak_growth_kib = peak_growth_in_fresh_process(MEMORY_PROBE, file_id)

    file = row(db, file_id)
    assert file["file_hash"] == digest.hexdigest()
    assert file["virus_scan_status"] == "clean"
    assert peak_growth_kib < 10 * 1024, f"peak RSS grew by {peak_growth_kib} KiB for 100 MB"


def test_each_step_task_can_be_run_on_its_own_in_order(db, user):
    from tasks import files

    file_id = upload(db, user, encoded(gradient(500, 500), "PNG"), "p.png", "image/png")
    for task in (files.hash_upload, files.sniff, files.scan, files.thumbnail):
        assert task.apply(args=[file_id]).state == "SUCCESS", task.name

    file = row(db, file_id)
    assert file["processing_status"] == "completed"
    assert file["thumbnail_path"]
    assert thumbnail_of(file).size == (400, 400)


def test_a_verdict_is_reused_for_the_same_content_only_under_the_same_signatures(db, user, caplog):
    caplog.set_level(logging.INFO, logger="veza.files.pipeline")
    content = b"the same attachment, sent three times"
    first, second, third = (upload(db, user, content) for _ in range(3))
    process(first)
    process(second)
    assert "reusing the verdict" in caplog.text

    caplog.clear()
    db.execute(
        'UPDATE files SET metadata = metadata || \'{"clamd_version": "ClamAV 0.1/1/old"}\''
        " WHERE id IN (%s, %s)",
        (first, second),
    )
    process(third)
    assert "reusing the verdict" not in caplog.text
    assert row(db, third)["virus_scan_status"] == "clean"
    assert row(db, third)["metadata"]["clamd_version"].startswith("ClamAV 1.")


def virus_missed_by_old_signatures(db, user) -> int:
    """EICAR, completed as clean under a signature version clamd no longer has."""
    from veza.files import pipeline

    file_id = upload(db, user, EICAR, "missed.txt", "text/plain")
    pipeline.hash_upload(file_id)
    db.execute(
        "UPDATE files SET virus_scan_status = 'clean', processing_status = 'completed',"
        " is_processed = true,"
        ' metadata = metadata || \'{"clamd_version": "ClamAV 0.1/1/old"}\' WHERE id = %s',
        (file_id,),
    )
    return file_id


def test_a_clean_verdict_from_older_signatures_is_scanned_again(db, user):
    """What the maintenance job's rescan relies on: new signatures may
    catch what the old ones missed."""
    file_id = virus_missed_by_old_signatures(db, user)
    process(file_id)

    file = row(db, file_id)
    assert file["virus_scan_status"] == "infected"
    assert file["file_path"].startswith("quarantine/")
    assert db.execute("SELECT severity FROM audit_logs").fetchall() == [("critical",)]


def test_an_infected_verdict_reaches_the_archived_copies_of_the_content(mdb, user):
    """An archived attachment (restorable) with the same bytes must not come
    back from a restore as a clean row whose content is quarantined."""
    db = mdb
    file_id = virus_missed_by_old_signatures(db, user)
    from veza.messages.retention import FILE_COLUMNS

    # By name, as retention copies it (columns added later follow archived_at).
    columns = ", ".join(FILE_COLUMNS)
    db.execute(
        f"INSERT INTO archived_files ({columns}) SELECT {columns} FROM files WHERE id = %s",
        (file_id,),
    )
    process(file_id)  # the rescan finds it

    archived = db.execute(
        "SELECT virus_scan_status::text, processing_status::text, file_path,"
        " metadata->>'failure_reason' FROM archived_files"
    ).fetchall()
    live = row(db, file_id)
    assert live["file_path"].startswith("quarantine/")
    assert archived == [
        ("infected", "failed", live["file_path"], live["metadata"]["failure_reason"])
    ]


def test_a_rescan_that_cannot_reach_clamd_is_retried_keeps_the_file_clean_and_is_asked_again(
    db, user, clamd_server, caplog
):
    """The file was clean under older signatures; the rescan meets clamd
    down. It retries like a first scan, the file stays clean (downloadable)
    meanwhile, and the next maintenance rescan asks again, finding it."""
    from tasks.files import scan
    from tests.maintenance_helpers import run_task

    file_id = virus_missed_by_old_signatures(db, user)

    def owed_scans() -> int:
        return db.execute(
            "SELECT count(*) FROM outbox WHERE task_name = 'files.scan' AND args = %s::jsonb",
            (f"[{file_id}]",),
        ).fetchone()[0]

    run_task("maintenance.rescan_files")
    assert owed_scans() == 1
    assert scan_with_clamd_down(clamd_server, caplog, file_id) == scan.max_retries + 1
    file = row(db, file_id)
    assert (file["virus_scan_status"], file["processing_status"]) == ("clean", "completed")

    run_task("maintenance.rescan_files")  # same clamd version as the last run
    assert owed_scans() == 2
    scan.apply(args=[file_id])
    assert row(db, file_id)["virus_scan_status"] == "infected"


def test_streaming_to_a_clamd_elsewhere_finds_a_virus_past_the_first_chunks(clamd_server, tmp_path):
    """INSTREAM over TCP, in 1 MiB chunks: a 3 MB archive whose infected
    member comes last arrives whole."""
    import zipfile

    from tests.clamav import TCP_PORT
    from veza.clamav import INSTREAM_CHUNK_SIZE, Scanner

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        out.writestr("noise.bin", os.urandom(3 * INSTREAM_CHUNK_SIZE))
        out.writestr("eicar.com", EICAR)
    clean = tmp_path / "clean.bin"
    clean.write_bytes(os.urandom(2 * INSTREAM_CHUNK_SIZE + 17))

    scanner = Scanner(socket_path=None, host="127.0.0.1", port=TCP_PORT)
    verdict = scanner.scan(archive)
    assert verdict.infected
    assert verdict.signature.startswith(EICAR_SIGNATURE)
    assert not scanner.scan(clean).infected


@pytest.mark.parametrize("over", ["unix socket", "tcp"])
def test_a_stream_fed_as_bytes_arrive_gets_clamd_s_verdict(clamd_server, over):
    """Scanner.stream(): INSTREAM fed chunk by chunk, as a bucket's bytes
    arrive, on either kind of connection; chunks larger than clamd's are
    split; clamd gone means no verdict, never clean."""
    from tests.clamav import SOCKET, TCP_PORT
    from veza.clamav import INSTREAM_CHUNK_SIZE, Scanner, ScanUnavailable

    scanner = (
        Scanner(socket_path=str(SOCKET))
        if over == "unix socket"
        else Scanner(socket_path=None, host="127.0.0.1", port=TCP_PORT)
    )

    def streamed(*chunks: bytes):
        stream = scanner.stream()
        try:
            for chunk in chunks:
                stream.send(chunk)
            return stream.verdict()
        finally:
            stream.close()

    import io
    import zipfile

    infected = streamed(EICAR[:20], EICAR[20:])  # the virus, in two pieces
    assert infected.infected
    assert infected.signature.startswith(EICAR_SIGNATURE)
    archive = io.BytesIO()  # 3 MiB of noise, then the virus: past clamd's chunk size
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        out.writestr("noise.bin", os.urandom(3 * INSTREAM_CHUNK_SIZE))
        out.writestr("eicar.com", EICAR)
    whole = archive.getvalue()
    assert streamed(whole[:100], whole[100:]).infected  # the second chunk split in four
    assert not streamed(os.urandom(3 * INSTREAM_CHUNK_SIZE + 1)).infected

    clamd_server.stop()
    try:
        with pytest.raises(ScanUnavailable):
            streamed(b"anything")
    finally:
        clamd_server.start()


THUMBNAIL_PROBE = textwrap.dedent("""
    import sys
    from veza.files import pipeline
    def high_water_kib():
        return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    pipeline._load(int(sys.argv[1]))      # imports and connections warmed up
    before = high_water_kib()
    pipeline.thumbnail(int(sys.argv[1]))
    print(high_water_kib() - before)
""")


def test_a_small_png_declaring_7000x7000_pixels_stays_within_the_decode_budget(db, user):
    """208 KB on disk, 7000x7000 RGBA: decoding it took ~385 MiB of the
    worker's memory. Refused from its header now, with the reason recorded."""
    from veza.files import pipeline
    from veza.settings import get_settings

    content = encoded(Image.new("RGBA", (7000, 7000), (200, 30, 30, 128)), "PNG")
    file_id = upload(db, user, content, "huge.png", "image/png")
    pipeline.hash_upload(file_id)
    pipeline.sniff(file_id)
    pipeline.scan(file_id)
    peak_growth_kib = peak_growth_in_fresh_process(THUMBNAIL_PROBE, file_id)

    file = row(db, file_id)
    budget_kib = get_settings().thumbnail_decode_budget_mib * 1024
    assert peak_growth_kib < budget_kib, f"peak RSS grew by {peak_growth_kib} KiB"
    assert file["thumbnail_path"] is None
    assert file["virus_scan_status"] == "clean"  # still served
    assert file["metadata"]["failure_reason"] == (
        "no thumbnail: decoding 7000x7000 RGBA takes 374 MiB, over the 128 MiB budget"
    )
