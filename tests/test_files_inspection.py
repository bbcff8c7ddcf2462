"""Fail closed for what cannot be inspected: archives and formats the real
clamd (with the project's shipped alerts) cannot read end infected or
failed as unscannable, audited, never clean; ordinary archives and office
documents stay clean. The pipeline's steps run in this process."""

from __future__ import annotations

import pytest

from tests.clamav import policy_value
from tests.factories import make_user
from tests.uploads import ordinary_archives, row, unscannable_archives, upload

UNSCANNABLE = unscannable_archives()
ORDINARY = ordinary_archives()


@pytest.fixture
def user(db, clamd_server) -> int:
    return make_user(db)


def process(db, file_id: int) -> dict:
    from veza.files import pipeline

    pipeline.run_all(file_id)
    return row(db, file_id)


@pytest.mark.parametrize("name", sorted(UNSCANNABLE))
def test_what_the_scanner_cannot_inspect_is_never_clean(db, user, name):
    file_id = upload(db, user, UNSCANNABLE[name], name, "application/octet-stream")
    file = process(db, file_id)

    assert file["virus_scan_status"] in ("failed", "infected"), file["metadata"]
    assert file["processing_status"] == "failed"
    assert file["is_processed"]  # final: every step and every rescan skips it
    if file["virus_scan_status"] == "failed":
        reason = file["metadata"]["failure_reason"]
        assert reason.startswith("unscannable: ")
        assert file["virus_scan_result"] == reason
        assert file["file_path"].startswith("blobs/")  # not a virus: not quarantined
        audit = db.execute(
            "SELECT event_type, severity::text, user_id, resource_id, event_data->>'reason'"
            " FROM audit_logs"
        ).fetchall()
        assert audit == [("file.unscannable", "warning", user, file_id, reason[13:])]


REASONS = [
    ("zipcrypto-harmless.zip", "unscannable: encrypted archive member readme.txt"),
    ("zipcrypto-eicar.zip", "unscannable: encrypted archive member eicar.com"),
    ("nested-encrypted.zip", "unscannable: encrypted archive member eicar.com"),
    (
        "lzma-harmless.zip",
        (
            "unscannable: archive member readme.txt is compressed with LZMA,"
            " which the scanner does not unpack"
        ),
    ),
    (
        "targz-of-lzma-zip.tar.gz",
        (
            "unscannable: archive member eicar.com is compressed with LZMA,"
            " which the scanner does not unpack"
        ),
    ),
    ("encrypted-header.7z", "unscannable: encrypted 7z archive: the 7z header is encrypted"),
    ("encrypted-members.7z", "unscannable: encrypted 7z archive members"),
    (
        "bzip2-members.7z",
        "unscannable: 7z members packed with bzip2, which the scanner does not unpack",
    ),
    ("truncated.7z", "unscannable: unreadable 7z archive: "),
    ("long-header.7z", "unscannable: unreadable 7z archive: 7z header of 8310064 bytes"),
    (
        "eicar.zst",
        "unscannable: the file is application/zstd, a format the scanner does not unpack",
    ),
    ("deep.zip", "unscannable: archives nested deeper than the scanner's limit of 17"),
    # What only clamd can tell: its own heuristics, by their signature.
    ("encrypted.pdf", "unscannable: encrypted content (Heuristics.Encrypted.PDF)"),
    (
        "truncated-program",
        "unscannable: a broken executable (Heuristics.Broken.Executable)",
    ),
    ("truncated.zip", "unscannable: the file is a corrupt or unreadable archive"),
    (
        "picture-with-zip.jpg",
        "unscannable: archive member readme.txt is compressed with LZMA",
    ),
]


@pytest.mark.parametrize(("name", "reason"), REASONS)
def test_the_reason_says_what_could_not_be_inspected(db, user, name, reason):
    file = process(db, upload(db, user, UNSCANNABLE[name], name))
    assert file["virus_scan_status"] == "failed"
    assert file["metadata"]["failure_reason"].startswith(reason)


@pytest.mark.parametrize("name", sorted(ORDINARY))
def test_ordinary_archives_and_office_documents_stay_clean(db, user, name):
    file = process(db, upload(db, user, ORDINARY[name], name))
    assert (file["virus_scan_status"], file["processing_status"]) == ("clean", "completed")
    assert "failure_reason" not in file["metadata"]
    assert db.execute("SELECT count(*) FROM audit_logs").fetchone() == (0,)


def test_our_own_inspection_names_the_encrypted_member(db, user, tmp_path):
    """What clamd reports first (Heuristics.Encrypted.Zip) our inspection
    also finds by itself, naming the member."""
    from veza.files.inspection import unscannable_reason

    archive = tmp_path / "a.zip"
    archive.write_bytes(UNSCANNABLE["aes-eicar.zip"])
    assert unscannable_reason(archive) == "encrypted archive member eicar.com"
    archive.write_bytes(UNSCANNABLE["encrypted-members.7z"])
    assert unscannable_reason(archive) == "encrypted 7z archive members"
    archive.write_bytes(ORDINARY["minutes.docx"])
    assert unscannable_reason(archive) is None


def test_an_unscannable_file_is_final_through_rescans(db, user):
    from tests.maintenance_helpers import run_task

    file_id = upload(db, user, UNSCANNABLE["lzma-harmless.zip"], "a.zip")
    before = process(db, file_id)
    run_task("maintenance.rescan_files", signature_version="a newer database")
    assert db.execute("SELECT count(*) FROM outbox WHERE task_name = 'files.scan'").fetchone() == (
        0,
    )
    assert process(db, file_id) == before


def test_a_clean_file_found_unscannable_on_rescan_stops_being_clean(db, user):
    """A file made clean before this inspection existed: its rescan (after
    a signature update) withdraws the verdict."""
    file_id = upload(db, user, UNSCANNABLE["lzma-eicar.zip"], "old.zip")
    from veza.files import pipeline

    pipeline.hash_upload(file_id)
    db.execute(
        "UPDATE files SET virus_scan_status = 'clean', processing_status = 'completed',"
        ' is_processed = true, metadata = metadata || \'{"clamd_version": "ClamAV 0.1/1/old"}\''
        " WHERE id = %s",
        (file_id,),
    )
    file = process(db, file_id)
    assert file["virus_scan_status"] == "failed"
    assert file["metadata"]["failure_reason"].startswith("unscannable: archive member eicar.com")


def test_the_inspections_limits_are_the_shipped_clamd_limits():
    from veza.files import inspection

    assert int(policy_value("MaxRecursion")) == inspection.MAX_NESTING
    assert int(policy_value("MaxFiles")) == inspection.MAX_MEMBERS
    assert int(policy_value("MaxScanSize").rstrip("M")) * 2**20 == inspection.MAX_EXPANDED_BYTES


def test_the_tests_clamd_runs_the_shipped_alerts(clamd_server):
    config = clamd_server.config.read_text()
    for option in (
        "AlertEncrypted",
        "AlertEncryptedArchive",
        "AlertEncryptedDoc",
        "AlertExceedsMax",
        "AlertBrokenExecutables",
    ):
        assert policy_value(option) == "yes"
        assert f"\n{option} yes\n" in config
