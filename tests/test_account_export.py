"""A user's data export through the API and the real accounts.export task
(run here, as a worker runs it): one at a time, a zip holding what the user
gave the server and the bytes of their clean files only, downloadable by
them alone until it expires, then removed by purge_expired_files."""

from __future__ import annotations

import io
import json
import zipfile

from tests.maintenance_helpers import run_task
from tests.test_api_notifications import indexed

CONTENT = b"%PDF-1.4 the report\n"


def store_file(db, owner: int, room: int, name: str, scan: str) -> str:
    """A file row of `owner` whose blob is stored, scanned as `scan`."""
    from veza.storage import get_storage

    digest = f"{len(name):02d}" + name.encode().hex().ljust(62, "0")[:62]
    storage = get_storage()
    relative = storage.blob_path(digest)
    with storage.atomic_writer(relative) as out:
        out.write(CONTENT)
    return str(
        db.execute(
            "INSERT INTO files (filename, original_filename, file_path, file_size, uploaded_by,"
            " room_id, file_hash, processing_status, virus_scan_status, mime_type)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 'completed', %s, 'application/pdf')"
            " RETURNING uuid",
            (name, name, relative, len(CONTENT), owner, room, digest, scan),
        ).fetchone()[0]
    )


def built(export_id: int) -> None:
    from worker import app

    app.loader.import_default_modules()
    result = app.tasks["accounts.export"].apply(args=[export_id])
    assert result.successful(), result.result


def test_an_export_holds_the_users_data_and_only_clean_files_for_them_alone(api, db):
    alice, bob = api.register(), api.register()
    room = api.room(alice, name="lab")
    api.join(room, bob)
    said = [api.say(room, alice, f"note {n}") for n in range(3)]
    theirs = api.say(room, bob, "reply")
    api.post(f"/messages/{theirs['id']}/reactions", alice, json={"emoji": "🎉"})
    indexed(*(m["id"] for m in said))
    clean = store_file(db, alice.id, room, "report.pdf", "clean")
    infected = store_file(db, alice.id, room, "evil.pdf", "infected")

    asked = api.post("/users/me/export", alice)
    assert asked.status_code == 202, asked.json
    assert (asked.json["status"], asked.json["download_url"]) == ("pending", None)
    again = api.post("/users/me/export", alice)
    assert again.json["id"] == asked.json["id"]  # one in flight at a time
    export_id = asked.json["id"]

    built(export_id)
    done = api.get(f"/users/me/exports/{export_id}", alice).json
    assert done["status"] == "done"
    assert done["size_bytes"] > 0
    assert api.get(f"/users/me/exports/{export_id}", bob).status_code == 404
    assert api.get(f"/users/me/exports/{export_id}/download", bob).status_code == 404
    download = api.get(done["download_url"].removeprefix("/api/v1"), alice)
    assert download.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(download.data))

    profile = json.loads(archive.read("profile.json"))
    assert (profile["username"], profile["email"]) == (
        alice.username,
        f"{alice.username}@example.com",
    )
    messages = [json.loads(line) for line in archive.read("messages.jsonl").splitlines()]
    assert [m["content"] for m in messages] == ["note 0", "note 1", "note 2"]
    reactions = [json.loads(line) for line in archive.read("reactions.jsonl").splitlines()]
    assert [(r["message_id"], r["emoji"]) for r in reactions] == [(theirs["id"], "🎉")]
    rooms = [json.loads(line) for line in archive.read("memberships.jsonl").splitlines()]
    assert [(m["kind"], m["room_name"]) for m in rooms] == [("room", "lab")]
    listed = {json.loads(line)["uuid"] for line in archive.read("files.jsonl").splitlines()}
    assert listed == {clean, infected}
    assert archive.read(f"files/{clean}/report.pdf") == CONTENT
    assert not [name for name in archive.namelist() if infected in name]  # fail closed


def test_an_export_expires_and_its_zip_is_removed(api, db):
    alice = api.register()
    export_id = api.post("/users/me/export", alice).json["id"]
    built(export_id)
    built(export_id)  # a re-delivered message finds it done and does nothing
    path = db.execute(
        "SELECT storage_path FROM data_exports WHERE id = %s", (export_id,)
    ).fetchone()[0]
    from veza.storage import get_storage

    assert get_storage().exists(path)
    db.execute(
        "UPDATE data_exports SET expires_at = now() - interval '1 minute' WHERE id = %s",
        (export_id,),
    )
    counts = run_task("maintenance.purge_expired_files")["counts"]
    assert counts["exports_expired"] == 1
    assert not get_storage().exists(path)
    gone = api.get(f"/users/me/exports/{export_id}", alice).json
    assert (gone["status"], gone["download_url"]) == ("expired", None)
    late = api.get(f"/users/me/exports/{export_id}/download", alice)
    assert late.status_code == 409
    # A new export can be asked for.
    assert api.post("/users/me/export", alice).json["id"] != export_id
