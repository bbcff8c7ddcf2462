"""The sweeps the seed implies (issue 15, item 4): expired mutes reset
(maintenance.expire_sessions), deleted messages' content scrubbed after
DELETED_CONTENT_GRACE_DAYS (maintenance.scrub_deleted_content), and
files.expires_at set by policy so that the expiry purge removes unattached
uploads (maintenance.purge_expired_files).

Every date is relative to now() and inside the partitions the `mdb`
fixture makes (the past year), so the tests pass on any day and in any
session TimeZone."""

from __future__ import annotations

import hashlib

from tests.factories import make_room, make_user, post, scalar
from tests.maintenance_helpers import run_task
from tests.test_maintenance_housekeeping import store
from veza.messages.scrub import TOMBSTONE

SCRUB = "maintenance.scrub_deleted_content"
PURGE_FILES = "maintenance.purge_expired_files"

# ------------------------------------------------------------------ mutes


def test_expired_mutes_are_reset_and_expired_kept_mutes_pruned(mdb):
    db = mdb
    owner, ran_out, still, forever, left = (make_user(db) for _ in range(5))
    room = make_room(db, owner)
    db.execute(
        "INSERT INTO room_members (room_id, user_id, is_muted, muted_until) VALUES"
        " (%s, %s, true, now() - interval '1 minute'), (%s, %s, true, now() + interval '1 hour'),"
        " (%s, %s, true, NULL)",
        (room, ran_out, room, still, room, forever),
    )
    db.execute(
        "INSERT INTO room_mutes (room_id, user_id, muted_until) VALUES"
        " (%s, %s, now() - interval '1 minute'), (%s, %s, now() + interval '1 hour'),"
        " (%s, %s, NULL)",
        (room, left, room, still, room, forever),
    )

    def unmuted() -> set[int]:
        # What the seed's partial index idx_room_members_active covers.
        rows = db.execute("SELECT user_id FROM room_members WHERE is_muted = false").fetchall()
        return {row[0] for row in rows}

    def kept_mutes() -> set[int]:
        return {row[0] for row in db.execute("SELECT user_id FROM room_mutes").fetchall()}

    dry = run_task("maintenance.expire_sessions", dry_run=True)
    assert (dry["counts"]["mutes_reset"], dry["counts"]["room_mutes_pruned"]) == (1, 1)
    assert unmuted() == set()
    assert kept_mutes() == {left, still, forever}

    result = run_task("maintenance.expire_sessions")

    assert (result["counts"]["mutes_reset"], result["counts"]["room_mutes_pruned"]) == (1, 1)
    assert unmuted() == {ran_out}
    assert db.execute(
        "SELECT is_muted, muted_until FROM room_members WHERE user_id = %s", (ran_out,)
    ).fetchone() == (False, None)
    assert kept_mutes() == {still, forever}


# ------------------------------------------------------- deleted content


def deleted_message(db, author: int, room: int, deleted_days_ago: int) -> int:
    """A message written 40 days ago, enriched, deleted `deleted_days_ago`
    days ago."""
    created = scalar(db, "SELECT now() - interval '40 days'")
    message_id, _ = post(db, author, room, content="secret plans @bob", created_at=created)
    db.execute(
        "UPDATE messages SET raw_content = content, rendered_html = '<p>secret plans</p>',"
        " referenced_message_ids = '{1}', search_config = 'english',"
        " search_vector = to_tsvector('english', content),"
        ' metadata = \'{"client": "web", "language_detected": "en",'
        '  "code_snippets": ["rust"]}\', is_deleted = true,'
        " deleted_at = now() - make_interval(days => %s) WHERE id = %s",
        (deleted_days_ago, message_id),
    )
    return message_id


def archive(db, message_id: int) -> None:
    """Move the message to the archive, as purge_retention does."""
    columns = ", ".join(
        row[0]
        for row in db.execute(
            "SELECT quote_ident(column_name) FROM information_schema.columns"
            " WHERE table_name = 'messages' AND table_schema = current_schema()"
        )
    )
    db.execute(
        f"INSERT INTO archived_messages ({columns}) SELECT {columns} FROM messages WHERE id = %s",
        (message_id,),
    )
    db.execute("DELETE FROM messages WHERE id = %s", (message_id,))


def content_of(db, message_id: int, table: str = "messages") -> tuple:
    return db.execute(
        "SELECT content, raw_content, rendered_html, search_vector IS NULL,"
        " referenced_message_ids, metadata"
        f" FROM {table} WHERE id = %s",
        (message_id,),
    ).fetchone()


def test_deleted_content_is_scrubbed_after_the_grace_and_not_before(mdb):
    db = mdb
    alice = make_user(db)
    room = make_room(db, alice)
    old = deleted_message(db, alice, room, deleted_days_ago=31)
    recent = deleted_message(db, alice, room, deleted_days_ago=29)
    archived = deleted_message(db, alice, room, deleted_days_ago=31)
    archive(db, archived)
    live = post(db, alice, room, content="still here")[0]
    before = {m: content_of(db, m) for m in (old, recent, live)}
    counts_before = db.execute("SELECT message_count FROM rooms WHERE id = %s", (room,)).fetchone()

    dry = run_task(SCRUB, dry_run=True)
    assert dry["counts"] == {"messages_scrubbed": 1, "archived_messages_scrubbed": 1}
    assert {m: content_of(db, m) for m in before} == before

    result = run_task(SCRUB)

    assert result["counts"] == {"messages_scrubbed": 1, "archived_messages_scrubbed": 1}
    scrubbed = (TOMBSTONE, None, None, True, [], {"client": "web"})
    assert content_of(db, old) == scrubbed
    assert content_of(db, archived, "archived_messages") == scrubbed
    assert content_of(db, recent) == before[recent]  # within the grace
    assert content_of(db, live) == before[live]
    assert (
        db.execute("SELECT message_count FROM rooms WHERE id = %s", (room,)).fetchone()
        == counts_before
    )
    again = run_task(SCRUB)
    assert again["counts"] == {"messages_scrubbed": 0, "archived_messages_scrubbed": 0}


# ------------------------------------------------------------------ files


def upload(
    db,
    owner: int,
    room: int,
    age: str,
    message: tuple | None = None,
    status: str = "completed",
) -> tuple[int, str]:
    """A file row `age` old (an SQL interval) with its blob in storage;
    returns its id and the blob's path."""
    from veza.storage import get_storage

    sha = hashlib.sha256(f"{owner} {room} {age} {message} {status}".encode()).hexdigest()
    path = get_storage().blob_path(sha)
    store(path, 7200)
    file_id = db.execute(
        "INSERT INTO files (uuid, filename, original_filename, file_path, file_size, mime_type,"
        " file_hash, uploaded_by, room_id, message_id, message_created_at, processing_status,"
        " virus_scan_status, is_processed, created_at) VALUES (gen_random_uuid(), 'f', 'f', %s,"
        " 7, 'text/plain', %s, %s, %s, %s, %s, %s, 'clean', true,"
        " now() - CAST(%s AS interval)) RETURNING id",
        (path, sha, owner, room, *(message or (None, None)), status, age),
    ).fetchone()[0]
    return file_id, path


def expiry_of(db, file_id: int):
    return scalar(db, "SELECT expires_at FROM files WHERE id = %s", (file_id,))


def test_expiry_is_set_by_policy_and_the_purge_removes_unattached_uploads(mdb):
    from veza.storage import get_storage

    db = mdb
    owner = make_user(db)
    keeping = make_room(db, owner, "keeping")
    brief = make_room(db, owner, "brief", message_retention_days=7)
    message = post(db, owner, brief, created_at=scalar(db, "SELECT now() - interval '1 day'"))
    kept_message = post(db, owner, keeping)
    stale, stale_path = upload(db, owner, keeping, "25 hours")
    fresh, _ = upload(db, owner, keeping, "1 hour")
    in_flight, _ = upload(db, owner, keeping, "25 hours", status="processing")
    attached, _ = upload(db, owner, brief, "1 day", message=message)
    forever, _ = upload(db, owner, keeping, "1 day", message=kept_message)

    dry = run_task(PURGE_FILES, dry_run=True)
    assert dry["counts"]["expiry_set"] == 3  # stale, fresh, attached
    assert scalar(db, "SELECT count(*) FROM files WHERE expires_at IS NOT NULL") == 0

    result = run_task(PURGE_FILES)

    assert result["counts"]["expiry_set"] == 3
    assert result["counts"]["expired_files"] == 1
    assert scalar(db, "SELECT count(*) FROM files WHERE id = %s", (stale,)) == 0
    assert not get_storage().absolute(stale_path).exists()
    assert scalar(
        db,
        "SELECT expires_at = created_at + interval '24 hours' FROM files WHERE id = %s",
        (fresh,),
    )
    assert scalar(
        db,
        "SELECT expires_at = message_created_at + interval '7 days' + interval '30 days'"
        " FROM files WHERE id = %s",
        (attached,),
    )
    assert expiry_of(db, in_flight) is None  # no past expiry while in the pipeline
    assert expiry_of(db, forever) is None
    assert run_task(PURGE_FILES)["counts"]["expiry_set"] == 0

    # The room keeps everything from now on: its attachment's expiry goes.
    db.execute("UPDATE rooms SET message_retention_days = 0 WHERE id = %s", (brief,))
    assert run_task(PURGE_FILES)["counts"]["expiry_set"] == 1
    assert expiry_of(db, attached) is None
