"""Retention: exactly the messages past retention go, to the archive, with
what references them; counters stay exact; partitions drop whole; restore
brings everything back."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.partitions import add_months, this_month
from tests.conftest import empty_tables
from tests.factories import make_room, make_user, post, scalar
from tests.maintenance_helpers import (
    ARCHIVE_TABLES,
    counter_mismatches,
    index_members,
    make_past_partitions,
    run_task,
    runs,
)

PURGE = "maintenance.purge_retention"


def post_aged(db, author, room, days: float, parent=None, mentions=()) -> tuple:
    return db.execute(
        "INSERT INTO messages (room_id, author_id, content, created_at, parent_message_id,"
        " parent_created_at, mentions)"
        " VALUES (%s, %s, 'hi', now() - make_interval(secs => %s), %s, %s, %s)"
        " RETURNING id, created_at",
        (room, author, days * 86400, parent and parent[0], parent and parent[1], list(mentions)),
    ).fetchone()


def react(db, message, user, emoji="+1"):
    db.execute(
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji) VALUES (%s, %s, %s, %s)",
        (message[0], message[1], user, emoji),
    )


def live_ids(db) -> set[int]:
    return {row[0] for row in db.execute("SELECT id FROM messages")}


def archived_ids(db) -> set[int]:
    return {row[0] for row in db.execute("SELECT id FROM archived_messages")}


# Ages are whole days plus half a day, so no message sits within hours of a
# retention boundary (the test must not depend on how long it runs).
rooms_strategy = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 3, 10, 40]),  # retention days
        st.lists(  # messages: (age in days, reply to an earlier one?, reactions)
            st.tuples(st.integers(0, 80), st.booleans(), st.integers(0, 2)),
            max_size=8,
        ),
    ),
    min_size=1,
    max_size=4,
)


@pytest.mark.slow
@pytest.mark.timeout(300)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rooms=rooms_strategy)
def test_retention_removes_exactly_the_messages_beyond_retention(mdb, rooms):
    db = mdb
    # Each example starts afresh (the `mdb` fixture runs once for them all).
    empty_tables(db)
    db.execute(f"TRUNCATE {ARCHIVE_TABLES}")
    make_past_partitions(db)
    author = make_user(db, "author")
    fan = make_user(db, "fan")
    expected_gone, expected_kept = set(), set()
    for index, (retention, messages) in enumerate(rooms):
        room = make_room(db, author, f"room{index}", message_retention_days=retention)
        posted = []
        # oldest first, so that a reply is younger than its parent
        for age, is_reply, reactions in sorted(messages, key=lambda m: -m[0]):
            parent = posted[-1] if is_reply and posted else None
            message = post_aged(db, author, room, age + 0.5, parent=parent, mentions=[fan])
            posted.append(message)
            for emoji in ["+1", "heart"][:reactions]:
                react(db, message, fan, emoji)
            beyond = retention > 0 and age + 0.5 > retention
            (expected_gone if beyond else expected_kept).add(message[0])
    index_members(db)

    run_task(PURGE)

    assert live_ids(db) == expected_kept
    assert archived_ids(db) == expected_gone
    assert counter_mismatches(db) == []
    orphans = scalar(
        db,
        "SELECT count(*) FROM reactions r WHERE NOT EXISTS (SELECT 1 FROM messages m"
        " WHERE m.id = r.message_id AND m.created_at = r.message_created_at)",
    )
    assert orphans == 0


def test_purge_archives_references_keeps_young_replies_and_restore_brings_all_back(mdb):
    db = mdb
    alice, bob = make_user(db, "alice"), make_user(db, "bob")
    room = make_room(db, alice, "short", message_retention_days=10)
    keep = make_room(db, alice, "forever")
    root = post_aged(db, alice, room, 20, mentions=[bob])
    old_reply = post_aged(db, bob, room, 15, parent=root)
    young_reply = post_aged(db, bob, room, 2, parent=root)
    react(db, root, bob)
    react(db, old_reply, alice)
    db.execute(
        "INSERT INTO files (filename, original_filename, file_path, file_size, uploaded_by,"
        " room_id, message_id, message_created_at, file_hash)"
        " VALUES ('a.png', 'a.png', 'blobs/x', 10, %s, %s, %s, %s, repeat('a', 64))",
        (alice, room, root[0], root[1]),
    )
    untouched = post_aged(db, alice, keep, 20)
    notify(db, bob, root)
    index_members(db)
    before = db.execute(
        "SELECT id, thread_count, reaction_count FROM messages ORDER BY id"
    ).fetchall()

    dry = run_task(PURGE, dry_run=True)
    assert dry["counts"]["messages_deleted"] == 2
    assert live_ids(db) == {root[0], old_reply[0], young_reply[0], untouched[0]}

    run_task(PURGE)
    assert live_ids(db) == {young_reply[0], untouched[0]}
    assert archived_ids(db) == {root[0], old_reply[0]}
    assert scalar(db, "SELECT count(*) FROM archived_reactions") == 2
    assert scalar(db, "SELECT count(*) FROM archived_files") == 1
    assert scalar(db, "SELECT count(*) FROM files") == 0
    assert scalar(db, "SELECT count(*) FROM message_mentions") == 0
    assert scalar(db, "SELECT count(*) FROM notifications") == 0  # gone with its message
    assert (
        scalar(db, "SELECT parent_message_id FROM messages WHERE id = %s", (young_reply[0],))
        is None
    )
    assert counter_mismatches(db) == []
    assert [r[0] for r in runs(db, PURGE)] == ["dry_run", "succeeded"]
    assert scalar(db, "SELECT count(*) FROM audit_logs WHERE event_type = %s", (PURGE,)) == 2

    from veza.messages.retention import restore

    restored = restore(room, root[1] - timedelta(days=1), young_reply[1])
    assert restored["messages"] == 2
    assert restored["replies_reattached"] == 1
    assert (
        db.execute("SELECT id, thread_count, reaction_count FROM messages ORDER BY id").fetchall()
        == before
    )
    assert scalar(db, "SELECT count(*) FROM reactions") == 2
    assert scalar(db, "SELECT count(*) FROM files") == 1
    assert scalar(db, "SELECT count(*) FROM message_mentions") == 1
    assert scalar(db, "SELECT count(*) FROM archived_messages") == 0
    assert counter_mismatches(db) == []


def notify(db, user: int, message: tuple) -> None:
    """A notification of `message` (id, created_at) for `user`, as the
    fan-out writes it."""
    db.execute(
        "INSERT INTO notifications (user_id, kind, message_id, message_created_at, room_id)"
        " SELECT %s, 'mention', id, created_at, room_id FROM messages"
        " WHERE id = %s AND created_at = %s",
        (user, *message),
    )


def month_start(months_ago: int) -> date:
    """The first day of the UTC month `months_ago` before this one."""
    return add_months(this_month(), -months_ago)


def test_a_month_covered_by_every_retention_is_dropped_whole_and_restorable(mdb):
    db = mdb
    alice = make_user(db, "alice")
    room = make_room(db, alice, "short", message_retention_days=30)
    old_month = month_start(4)
    partition = f"messages_y{old_month.year:04d}m{old_month.month:02d}"
    at = f"{old_month.isoformat()} 12:00:00+00"
    old = post(db, alice, room, created_at=at)
    react(db, old, alice)
    notify(db, make_user(db, "bob"), old)  # a reference the detach would refuse
    old_child = post(db, alice, room, created_at=f"{old_month.isoformat()} 13:00:00+00", parent=old)
    young_reply = post_aged(db, alice, room, 1, parent=old)
    index_members(db)
    assert scalar(db, "SELECT message_count FROM rooms WHERE id = %s", (room,)) == 3
    dry = run_task(PURGE, dry_run=True)
    assert dry["counts"]["messages_deleted"] == 2  # counted once, though in a month dropped whole

    result = run_task(PURGE)

    assert result["counts"]["message_partitions_dropped"] >= 1
    assert scalar(db, "SELECT to_regclass(%s)", (partition,)) is None
    assert live_ids(db) == {young_reply[0]}
    assert archived_ids(db) == {old[0], old_child[0]}
    assert scalar(db, "SELECT count(*) FROM notifications") == 0
    assert counter_mismatches(db) == []

    from veza.messages.retention import restore

    db.execute("UPDATE rooms SET message_retention_days = 0 WHERE id = %s", (room,))
    restore(room, f"{old_month.isoformat()} 00:00:00+00", f"{old_month.isoformat()} 23:00:00+00")
    assert scalar(db, "SELECT to_regclass(%s)::text", (partition,)) == partition
    assert live_ids(db) == {old[0], old_child[0], young_reply[0]}
    assert scalar(db, "SELECT thread_count FROM messages WHERE id = %s", (old[0],)) == 2
    assert scalar(db, "SELECT count(*) FROM reactions") == 1
    assert counter_mismatches(db) == []


def test_audit_logs_older_than_the_retention_go_by_whole_partitions(mdb):
    db = mdb
    old_month, kept_month = month_start(14), month_start(2)
    db.execute("SELECT create_monthly_partitions('audit_logs', %s, 1)", (old_month,))
    db.execute("SELECT create_monthly_partitions('audit_logs', %s, 1)", (kept_month,))
    for month in (old_month, kept_month):
        db.execute(
            "INSERT INTO audit_logs (event_type, event_data, created_at) VALUES ('x', '{}', %s)",
            (f"{month.isoformat()} 10:00:00+00",),
        )

    run_task(PURGE)

    assert (
        scalar(
            db,
            "SELECT to_regclass(%s)",
            (f"audit_logs_y{old_month.year:04d}m{old_month.month:02d}",),
        )
        is None
    )
    assert scalar(db, "SELECT count(*) FROM audit_logs WHERE event_type = 'x'") == 1


def test_a_partition_drop_killed_after_the_detach_is_finished_by_the_next_run(mdb):
    from veza.maintenance import partition_upkeep
    from veza.maintenance.run import Run
    from veza.messages import retention
    from worker import app

    db = mdb
    alice = make_user(db, "alice")
    room = make_room(db, alice, "short", message_retention_days=30)
    old_month = month_start(5)
    name = f"messages_y{old_month.year:04d}m{old_month.month:02d}"
    old = post(db, alice, room, created_at=f"{old_month.isoformat()} 12:00:00+00")
    react(db, old, alice)
    young = post_aged(db, alice, room, 1)
    index_members(db)
    # The run that "dies": references dealt with, partition detached, no drop.
    app.loader.import_default_modules()
    run = Run(PURGE, 0, False)
    retention.unlink_partition(run, partition_upkeep.Partition(name, old_month))
    partition_upkeep.detach_concurrently("messages", partition_upkeep.Partition(name, old_month))
    assert scalar(db, "SELECT message_count FROM rooms WHERE id = %s", (room,)) == 2

    run_task(PURGE)

    assert scalar(db, "SELECT to_regclass(%s)", (name,)) is None
    assert live_ids(db) == {young[0]}
    assert archived_ids(db) == {old[0]}
    assert counter_mismatches(db) == []


def test_a_reply_restored_before_its_parent_is_re_attached_when_the_parent_comes_back(mdb):
    from veza.messages.retention import restore

    db = mdb
    alice = make_user(db, "alice")
    room = make_room(db, alice, "short", message_retention_days=10)
    root = post_aged(db, alice, room, 20)
    reply = post_aged(db, alice, room, 15, parent=root)
    index_members(db)
    run_task(PURGE)
    db.execute("UPDATE rooms SET message_retention_days = 0 WHERE id = %s", (room,))

    restore(room, reply[1], reply[1] + timedelta(seconds=1))
    assert scalar(db, "SELECT parent_message_id FROM messages WHERE id = %s", (reply[0],)) is None
    restore(room, root[1], root[1] + timedelta(seconds=1))

    assert (
        scalar(db, "SELECT parent_message_id FROM messages WHERE id = %s", (reply[0],)) == root[0]
    )
    assert scalar(db, "SELECT thread_count FROM messages WHERE id = %s", (root[0],)) == 1
    assert scalar(db, "SELECT count(*) FROM archived_reply_links") == 0
    assert counter_mismatches(db) == []


def test_a_reaction_added_to_an_unlinked_row_is_archived_and_the_month_still_drops(mdb):
    """The walk over a month skips rows archived already (that is how a run
    resumes); a reference made to one of them afterwards is found by the
    look over the month's ids that follows the walk."""
    from veza.maintenance import partition_upkeep
    from veza.maintenance.run import Run
    from veza.messages import retention
    from worker import app

    db = mdb
    alice, bob = make_user(db, "alice"), make_user(db, "bob")
    room = make_room(db, alice, "short", message_retention_days=30)
    old_month = month_start(6)
    name = f"messages_y{old_month.year:04d}m{old_month.month:02d}"
    old = post(db, alice, room, created_at=f"{old_month.isoformat()} 12:00:00+00")
    other = post(db, alice, room, created_at=f"{old_month.isoformat()} 13:00:00+00")
    index_members(db)
    app.loader.import_default_modules()
    # The run that stopped after unlinking the month.
    assert retention.unlink_partition(
        Run(PURGE, 0, False), partition_upkeep.Partition(name, old_month)
    )
    assert archived_ids(db) == {old[0], other[0]}
    react(db, old, bob)
    notify(db, bob, other)
    reply = post_aged(db, bob, room, 1, parent=other)

    run_task(PURGE)

    assert scalar(db, "SELECT to_regclass(%s)", (name,)) is None
    assert live_ids(db) == {reply[0]}
    assert scalar(db, "SELECT count(*) FROM archived_reactions") == 1
    assert scalar(db, "SELECT parent_message_id FROM messages WHERE id = %s", (reply[0],)) is None
    assert scalar(db, "SELECT count(*) FROM archived_reply_links") == 1
    assert counter_mismatches(db) == []
