"""The seed's schema on real PostgreSQL: migrations, constraints, triggers,
functions, the room_stats view and partitions."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.conftest import alembic
from tests.factories import fresh_database, make_room, make_user, partitions_since, post, scalar

# ------------------------------------------------------------- migrations


@pytest.mark.slow
def test_migrations_round_trip_on_an_empty_database():
    with fresh_database("roundtrip") as url:

        def objects() -> tuple:
            with psycopg.connect(url) as c:
                return c.execute(
                    "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    "        WHERE n.nspname = 'public' AND c.relname NOT LIKE 'alembic_version%%'),"
                    "       (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
                    "        WHERE n.nspname = 'public' AND t.typtype = 'e'),"
                    "       (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                    "        WHERE n.nspname = 'public')"
                ).fetchone()

        alembic("upgrade", "head")
        created = objects()
        assert created[0] > 50
        assert created[1] == 9  # the seed's 8, notification kinds (0016)
        assert created[2] >= 7
        alembic("downgrade", "base")
        assert objects() == (0, 0, 0)
        alembic("upgrade", "head")
        assert objects() == created


def test_models_match_the_migrated_database(database_url):
    from db.engine import get_engine
    from db.models import Base
    from db.partitions import include_object

    with get_engine().connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": include_object, "compare_type": True}
        )
        assert compare_metadata(context, Base.metadata) == []


# ------------------------------------------------------------ constraints

BAD_ROWS = {
    "bad email": "INSERT INTO users (username, email, password_hash) VALUES ('alice', 'not-an-email', 'x')",
    "bad username": "INSERT INTO users (username, email, password_hash) VALUES ('a b!', 'ab@example.com', 'x')",
    "short username": "INSERT INTO users (username, email, password_hash) VALUES ('ab', 'ab@example.com', 'x')",
    "long timezone": "INSERT INTO users (username, email, password_hash, timezone) VALUES ('tzuser', 'tz@example.com', 'x', repeat('z', 51))",
    "blank content": "INSERT INTO messages (room_id, author_id, content) VALUES ({room}, {user}, '   ')",
    "long content": "INSERT INTO messages (room_id, author_id, content) VALUES ({room}, {user}, repeat('a', 4001))",
    "no location": "INSERT INTO messages (author_id, content) VALUES ({user}, 'hi')",
    "dm participants out of order": "INSERT INTO direct_conversations (participant_ids) VALUES (ARRAY[{other}, {user}])",
    "dm of three": "INSERT INTO direct_conversations (participant_ids) VALUES (ARRAY[{user}, {other}, {other}+1])",
    "empty file": "INSERT INTO files (filename, original_filename, file_path, file_size, uploaded_by) VALUES ('f', 'f', 'p', 0, {user})",
    "file over 100 MB": "INSERT INTO files (filename, original_filename, file_path, file_size, uploaded_by) VALUES ('f', 'f', 'p', 104857601, {user})",
    "short hash": "INSERT INTO files (filename, original_filename, file_path, file_size, uploaded_by, file_hash) VALUES ('f', 'f', 'p', 1, {user}, 'abc')",
    "long emoji": "INSERT INTO reactions (message_id, message_created_at, user_id, emoji) VALUES ({msg}, '{msg_at}', {user}, repeat('x', 21))",
    "empty emoji": "INSERT INTO reactions (message_id, message_created_at, user_id, emoji) VALUES ({msg}, '{msg_at}', {user}, '')",
    "slow mode over an hour": "UPDATE rooms SET slow_mode_seconds = 3601 WHERE id = {room}",
    "max members zero": "UPDATE rooms SET max_members = 0 WHERE id = {room}",
    "negative message count": "UPDATE rooms SET message_count = -1 WHERE id = {room}",
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_check_constraints_reject_bad_rows(db, case):
    user = make_user(db, "owner")
    other = make_user(db, "other")
    room = make_room(db, user)
    msg, msg_at = post(db, user, room)
    sql = BAD_ROWS[case].format(user=user, other=other, room=room, msg=msg, msg_at=msg_at)
    # For these the column's VARCHAR(n) refuses the value before the seed's
    # length CHECK (which repeats it) gets to run.
    too_long_for_type = {"long emoji", "long timezone"}
    expected = (
        psycopg.errors.StringDataRightTruncation
        if case in too_long_for_type
        else psycopg.errors.CheckViolation
    )
    with pytest.raises(expected):
        db.execute(sql)


def test_good_rows_pass_the_same_constraints(db):
    user = make_user(db, "owner_1")
    other = make_user(db, "other-2")
    room = make_room(db, user)
    msg, msg_at = post(db, user, room, content="x" * 4000)
    lo, hi = sorted((user, other))
    db.execute(
        "INSERT INTO direct_conversations (participant_ids) VALUES (ARRAY[%s, %s])", (lo, hi)
    )
    db.execute(
        "INSERT INTO files (filename, original_filename, file_path, file_size, uploaded_by, file_hash)"
        " VALUES ('f', 'f', 'p', 104857600, %s, repeat('a', 64))",
        (user,),
    )
    db.execute(
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji) VALUES (%s, %s, %s, %s)",
        (msg, msg_at, user, "👍"),
    )


# --------------------------------------------------------------- triggers


def recount(db, room: int) -> tuple[int, int]:
    return db.execute(
        "SELECT (SELECT count(*) FROM room_members WHERE room_id = %s),"
        "       (SELECT count(*) FROM messages WHERE room_id = %s AND NOT is_deleted)",
        (room, room),
    ).fetchone()


def stored(db, room: int) -> tuple[int, int]:
    return db.execute(
        "SELECT member_count, message_count FROM rooms WHERE id = %s", (room,)
    ).fetchone()


def test_counters_stay_exact_through_insert_soft_delete_restore_and_delete(db):
    owner = make_user(db, "owner")
    room = make_room(db, owner)
    users = [make_user(db, f"user{i}") for i in range(6)]
    for u in users:
        db.execute("INSERT INTO room_members (room_id, user_id) VALUES (%s, %s)", (room, u))
    db.execute("DELETE FROM room_members WHERE user_id = %s", (users[0],))
    assert stored(db, room) == recount(db, room) == (5, 0)

    rng = random.Random(7)
    ids = [post(db, rng.choice(users), room)[0] for _ in range(40)]
    for step in range(200):
        target = rng.choice(ids)
        action = rng.choice(["soft", "restore", "hard", "post"])
        if action == "soft":
            db.execute(
                "UPDATE messages SET is_deleted = TRUE, deleted_at = now() WHERE id = %s", (target,)
            )
        elif action == "restore":
            db.execute(
                "UPDATE messages SET is_deleted = FALSE, deleted_at = NULL WHERE id = %s", (target,)
            )
        elif action == "hard":
            db.execute("DELETE FROM messages WHERE id = %s", (target,))
        else:
            ids.append(post(db, rng.choice(users), room)[0])
        assert stored(db, room) == recount(db, room), f"drift after step {step} ({action})"


def test_deleting_a_soft_deleted_message_does_not_count_it_twice(db):
    owner = make_user(db, "owner")
    room = make_room(db, owner)
    _keep, _ = post(db, owner, room)
    gone, _ = post(db, owner, room)
    db.execute("UPDATE messages SET is_deleted = TRUE WHERE id = %s", (gone,))
    db.execute("DELETE FROM messages WHERE id = %s", (gone,))
    assert stored(db, room)[1] == 1


def test_direct_messages_keep_conversation_counters_current(db):
    a, b = make_user(db, "alice"), make_user(db, "bob")
    conv = db.execute(
        "INSERT INTO direct_conversations (participant_ids) VALUES (ARRAY[%s, %s]) RETURNING id",
        (min(a, b), max(a, b)),
    ).fetchone()[0]
    at = datetime.now(UTC).replace(microsecond=0)
    ids = [
        post(db, a, conversation=conv, created_at=at + timedelta(seconds=i))[0] for i in range(3)
    ]
    db.execute("UPDATE messages SET is_deleted = TRUE WHERE id = %s", (ids[0],))
    db.execute("DELETE FROM messages WHERE id = %s", (ids[0],))
    count, last = db.execute(
        "SELECT message_count, last_activity_at FROM direct_conversations WHERE id = %s", (conv,)
    ).fetchone()
    assert count == 2
    assert last == at + timedelta(seconds=2)


def test_replies_keep_the_parents_thread_count(db):
    owner = make_user(db, "owner")
    room = make_room(db, owner)
    parent = post(db, owner, room)
    replies = [post(db, owner, room, parent=parent)[0] for _ in range(3)]
    db.execute("UPDATE messages SET is_deleted = TRUE WHERE id = %s", (replies[0],))
    row = db.execute(
        "SELECT thread_count, is_thread_root FROM messages WHERE id = %s", (parent[0],)
    ).fetchone()
    assert row == (2, True)


def test_deleting_a_message_removes_its_reactions_mentions_replies_and_files(db):
    owner = make_user(db, "owner")
    other = make_user(db, "other")
    room = make_room(db, owner)
    db.execute("INSERT INTO room_members (room_id, user_id) VALUES (%s, %s)", (room, other))
    msg, at = db.execute(
        "INSERT INTO messages (room_id, author_id, content, mentions) VALUES (%s, %s, 'hi @other', %s)"
        " RETURNING id, created_at",
        (room, owner, [other, 999999]),
    ).fetchone()
    reply = post(db, other, room, parent=(msg, at))
    db.execute(
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji) VALUES (%s, %s, %s, '👍')",
        (msg, at, other),
    )
    db.execute(
        "INSERT INTO files (filename, original_filename, file_path, file_size, uploaded_by,"
        " room_id, message_id, message_created_at) VALUES ('f', 'f', 'p', 10, %s, %s, %s, %s)",
        (owner, room, msg, at),
    )
    # The mentions table follows messages.mentions, for existing users only.
    assert db.execute("SELECT user_id FROM message_mentions").fetchall() == [(other,)]

    db.execute("DELETE FROM messages WHERE id = %s", (msg,))
    for table in ("reactions", "message_mentions", "files"):
        assert scalar(db, f"SELECT count(*) FROM {table}") == 0, table
    assert scalar(db, "SELECT count(*) FROM messages WHERE id = %s", (reply[0],)) == 0
    assert stored(db, room)[1] == recount(db, room)[1] == 0


def test_mentions_follow_edits_of_the_mentions_array(db):
    owner, a, b = make_user(db, "owner"), make_user(db, "anna"), make_user(db, "bert")
    room = make_room(db, owner)
    msg, _ = db.execute(
        "INSERT INTO messages (room_id, author_id, content, mentions) VALUES (%s, %s, 'x', %s) RETURNING id, created_at",
        (room, owner, [a]),
    ).fetchone()
    db.execute("UPDATE messages SET mentions = %s WHERE id = %s", ([b], msg))
    assert db.execute("SELECT user_id FROM message_mentions").fetchall() == [(b,)]


# -------------------------------------------------------------- functions


def test_calculate_unread_count_matches_a_python_count(db):
    owner, reader = make_user(db, "owner"), make_user(db, "reader")
    room = make_room(db, owner)
    db.execute("INSERT INTO room_members (room_id, user_id) VALUES (%s, %s)", (room, reader))
    rng = random.Random(3)
    messages = []
    for _ in range(60):
        author = rng.choice([owner, reader])
        mid, _ = post(db, author, room)
        deleted = rng.random() < 0.2
        if deleted:
            db.execute("UPDATE messages SET is_deleted = TRUE WHERE id = %s", (mid,))
        messages.append((mid, author, deleted))

    def expected(last_read: int | None) -> int:
        return sum(
            1
            for mid, author, deleted in messages
            if not deleted and author != reader and (last_read is None or mid > last_read)
        )

    def unread() -> int:
        return scalar(db, "SELECT calculate_unread_count(%s, %s)", (reader, room))

    assert unread() == expected(None)
    last_read = messages[25][0]
    db.execute(
        "UPDATE room_members SET last_read_message_id = %s WHERE user_id = %s", (last_read, reader)
    )
    assert unread() == expected(last_read)


def test_refresh_room_stats_matches_a_direct_aggregate(db):
    owner = make_user(db, "owner")
    users = [make_user(db, f"u{i}xx") for i in range(5)]
    rooms = [make_room(db, owner, f"room{i}") for i in range(3)]
    archived = make_room(db, owner, "old", is_archived=True)
    rng = random.Random(11)
    now = datetime.now(UTC)
    partitions_since(db, "10 days")
    for _ in range(80):
        room = rng.choice([*rooms, archived])
        mid, at = post(
            db, rng.choice(users), room, created_at=now - timedelta(hours=rng.uniform(0, 24 * 10))
        )
        if rng.random() < 0.15:
            db.execute("UPDATE messages SET is_deleted = TRUE WHERE id = %s", (mid,))
        for u in rng.sample(users, rng.randint(0, 3)):
            db.execute(
                "INSERT INTO reactions (message_id, message_created_at, user_id, emoji, created_at)"
                " VALUES (%s, %s, %s, '🚀', %s)",
                (mid, at, u, now - timedelta(hours=rng.uniform(0, 48))),
            )
    db.execute("SELECT refresh_room_stats()")
    view = db.execute(
        "SELECT room_id, total_messages, messages_24h, messages_7d, active_users_24h,"
        " last_message_at, reactions_24h FROM room_stats ORDER BY room_id"
    ).fetchall()
    direct = []
    for room in sorted(rooms):
        live = db.execute(
            "SELECT id, created_at, author_id FROM messages WHERE room_id = %s AND NOT is_deleted",
            (room,),
        ).fetchall()
        day, week = now - timedelta(hours=24), now - timedelta(days=7)
        reactors = db.execute(
            "SELECT DISTINCT r.user_id FROM reactions r JOIN messages m"
            " ON m.id = r.message_id AND m.created_at = r.message_created_at"
            " WHERE m.room_id = %s AND NOT m.is_deleted AND r.created_at >= now() - interval '24 hours'",
            (room,),
        ).fetchall()
        direct.append(
            (
                room,
                len(live),
                sum(1 for _, at, _ in live if at >= day),
                sum(1 for _, at, _ in live if at >= week),
                len({a for _, at, a in live if at >= day}),
                max((at for _, at, _ in live), default=None),
                len(reactors),
            )
        )
    assert [v[:2] + v[3:4] + v[5:] for v in view] == [d[:2] + d[3:4] + d[5:] for d in direct]
    # The 24-hour windows are measured at refresh time; allow for the
    # seconds between the refresh and the Python clock.
    for v, d in zip(view, direct, strict=False):
        assert abs(v[2] - d[2]) <= 1
        assert abs(v[4] - d[4]) <= 1


# ------------------------------------------------------------- partitions


def premade_months() -> list[date]:
    first = datetime.now(UTC).date().replace(day=1)
    months = [first]
    for _ in range(3):
        months.append((months[-1] + timedelta(days=32)).replace(day=1))
    return months


def test_a_message_in_each_premade_month_lands_in_that_months_partition(db):
    owner = make_user(db, "owner")
    room = make_room(db, owner)
    for month in premade_months():
        # First and last instant of the month, in UTC.
        start = datetime(month.year, month.month, 1, tzinfo=UTC)
        end = (start + timedelta(days=32)).replace(day=1) - timedelta(microseconds=1)
        for at in (start, end):
            mid, _ = post(db, owner, room, created_at=at)
            part = scalar(db, "SELECT tableoid::regclass::text FROM messages WHERE id = %s", (mid,))
            assert part == f"messages_y{month.year:04d}m{month.month:02d}"
        audit_part = scalar(
            db,
            "INSERT INTO audit_logs (event_type, event_data, created_at) VALUES ('t', '{}', %s)"
            " RETURNING tableoid::regclass::text",
            (start,),
        )
        assert audit_part == f"audit_logs_y{month.year:04d}m{month.month:02d}"


def test_creating_partitions_is_idempotent(db):
    first = premade_months()[0]
    months = [first]
    for _ in range(5):
        months.append((months[-1] + timedelta(days=32)).replace(day=1))
    missing = [
        f"messages_y{m.year:04d}m{m.month:02d}"
        for m in months
        if scalar(db, "SELECT to_regclass(%s) IS NULL", (f"messages_y{m.year:04d}m{m.month:02d}",))
    ]
    created = db.execute("SELECT create_monthly_partitions('messages', %s, 6)", (first,)).fetchall()
    again = db.execute("SELECT create_monthly_partitions('messages', %s, 6)", (first,)).fetchall()
    assert [name for (name,) in created] == missing
    assert again == []
