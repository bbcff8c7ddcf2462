"""Shared set-up for the maintenance tests: a clean database including the
archive tables, past partitions, and recounts of every counter."""

from __future__ import annotations

import pytest

from tests.factories import make_room, make_user, partitions_since

ARCHIVE_TABLES = "archived_messages, archived_reactions, archived_files, archived_reply_links"


@pytest.fixture
def mdb(db):
    """`db`, plus empty archive tables and partitions for the past year."""
    db.execute(f"TRUNCATE {ARCHIVE_TABLES}, room_stats_rollup")
    make_past_partitions(db)
    return db


def make_past_partitions(db) -> None:
    """Partitions of messages for the past year (purges drop past months)."""
    db.execute(
        "SELECT create_monthly_partitions('messages',"
        " ((now() AT TIME ZONE 'UTC') - interval '12 months')::date, 13)"
    )


def run_task(name: str, **kwargs) -> dict:
    """Run a maintenance task in this process, through Celery's apply (the
    same code path as on a worker: lock, run log, audit, progress)."""
    from worker import app

    app.loader.import_default_modules()
    result = app.tasks[name].apply(kwargs=kwargs)
    if result.failed():
        raise result.result
    return result.result


def index_members(db) -> None:
    """Make every author a member of the rooms they posted in, with the
    message_count that messages.index would have left (tests insert
    messages directly, without the task)."""
    db.execute(
        "INSERT INTO room_members (room_id, user_id, message_count)"
        " SELECT room_id, author_id, count(*) FILTER (WHERE NOT is_deleted) FROM messages"
        " WHERE room_id IS NOT NULL GROUP BY room_id, author_id"
        " ON CONFLICT (room_id, user_id) DO UPDATE SET message_count = EXCLUDED.message_count"
    )


def counter_mismatches(db) -> list[tuple]:
    """Every counter the triggers keep, beside a recount; empty when exact."""
    rooms = db.execute(
        "SELECT 'room', r.id, r.message_count, count(m.id) FROM rooms r"
        " LEFT JOIN messages m ON m.room_id = r.id AND NOT m.is_deleted"
        " GROUP BY r.id HAVING r.message_count <> count(m.id)"
    ).fetchall()
    threads = db.execute(
        "SELECT 'thread', p.id, p.thread_count, count(c.id) FROM messages p"
        " LEFT JOIN messages c ON c.parent_message_id = p.id"
        "  AND c.parent_created_at = p.created_at AND NOT c.is_deleted"
        " GROUP BY p.id, p.created_at, p.thread_count, p.is_thread_root"
        " HAVING p.thread_count <> count(c.id) OR p.is_thread_root <> (count(c.id) > 0)"
    ).fetchall()
    mentions = db.execute(
        "SELECT 'mentions', m.id, cardinality(m.mentions), count(mm.user_id) FROM messages m"
        " LEFT JOIN message_mentions mm ON mm.message_id = m.id AND mm.message_created_at = m.created_at"
        " GROUP BY m.id, m.created_at, m.mentions HAVING cardinality(m.mentions) <> count(mm.user_id)"
    ).fetchall()
    members = db.execute(
        "SELECT 'member', rm.room_id, rm.user_id, rm.message_count, count(m.id) FROM room_members rm"
        " LEFT JOIN messages m ON m.room_id = rm.room_id AND m.author_id = rm.user_id AND NOT m.is_deleted"
        " GROUP BY rm.room_id, rm.user_id, rm.message_count HAVING rm.message_count <> count(m.id)"
    ).fetchall()
    unread = db.execute(
        "SELECT 'unread', p.conversation_id, p.user_id, p.unread_count, count(m.id)"
        " FROM direct_conversation_participants p"
        " LEFT JOIN messages m ON m.conversation_id = p.conversation_id AND m.author_id <> p.user_id"
        "  AND NOT m.is_deleted AND m.id > COALESCE(p.last_read_message_id, 0)"
        " GROUP BY p.conversation_id, p.user_id, p.unread_count HAVING p.unread_count <> count(m.id)"
    ).fetchall()
    return rooms + threads + mentions + members + unread


def runs(db, task: str) -> list[tuple]:
    return db.execute(
        "SELECT status, dry_run, counts FROM maintenance_runs WHERE task_name = %s ORDER BY id",
        (task,),
    ).fetchall()


def last_seen_behind(db) -> list[tuple]:
    """Users whose last_seen_at is older than their latest message (what
    messages.index keeps: at least that); empty when none is."""
    return db.execute(
        "SELECT u.id, u.last_seen_at, max(m.created_at) FROM users u JOIN messages m ON m.author_id = u.id"
        " GROUP BY u.id HAVING u.last_seen_at IS NULL OR u.last_seen_at < max(m.created_at)"
    ).fetchall()


def fill_retention_rooms(db, old: int, young: int, rooms: int) -> list[int]:
    """`rooms` rooms with a 1-day retention, each with old/rooms messages
    2-3 days old and young/rooms recent ones, every message with a reaction,
    plus one message as old in a room that keeps everything: the months the
    old messages fall in (this one, or last month on the 1st or 2nd) are
    then never covered whole, so the purge goes by room batches on any day.
    Set-based, one statement per room and age (the counter triggers update
    the room's row per message; one statement per room keeps that cheap)."""
    author = make_user(db, "author")
    made = [make_room(db, author, f"busy{i}", message_retention_days=1) for i in range(rooms)]
    partitions_since(db, "4 days")
    for room in made:
        db.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at)"
            " SELECT %s, %s, 'old ' || g, now() - interval '2 days' - g * interval '1 second'"
            " FROM generate_series(1, %s) g",
            (room, author, old // rooms),
        )
        db.execute(
            "INSERT INTO messages (room_id, author_id, content)"
            " SELECT %s, %s, 'young ' || g FROM generate_series(1, %s) g",
            (room, author, young // rooms),
        )
    keeper = make_room(db, author, "forever", message_retention_days=0)
    db.execute(
        "INSERT INTO messages (room_id, author_id, content, created_at)"
        " VALUES (%s, %s, 'kept', now() - interval '3 days')",
        (keeper, author),
    )
    db.execute(
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji)"
        " SELECT id, created_at, author_id, '+1' FROM messages WHERE content <> 'kept'"
    )
    index_members(db)
    return made


def waiting_on_a_lock(db) -> bool:
    """Some session of this database waits on a lock (one a test holds)."""
    return (
        db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()[0]
        > 0
    )
