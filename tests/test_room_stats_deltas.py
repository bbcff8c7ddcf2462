"""room_stats refreshed from what changed (migration 0023): after any mix
of changes, and as the clock moves on, the rollup equals the seed's own
query evaluated at the same instant, row for row (EXCEPT both ways).

The clock is simulated: refresh_room_stats_rollup(p_now) and the seed's
query are both evaluated at a chosen instant, and every row is dated
relative to it, so windows are crossed on purpose, on any day of the
month (the partitions of the past year and the months ahead exist)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from db.migrations.sqlfile import seed_section
from tests.factories import make_room, make_user
from tests.maintenance_helpers import make_past_partitions

COLUMNS = (
    "room_id, name, member_count, total_messages, messages_24h, messages_7d,"
    " active_users_24h, last_message_at, reactions_24h"
)
# The seed's definition, from its file, with NOW() the chosen instant.
SEED_QUERY = (
    seed_section("CREATE MATERIALIZED VIEW room_stats AS", "r.member_count;")
    .removeprefix("CREATE MATERIALIZED VIEW room_stats AS")
    .rstrip(";")
    .replace("NOW()", "CAST(%(now)s AS timestamptz)")
)


def refresh_and_compare(db, now: datetime) -> tuple[list, list]:
    """Refresh as of `now`; returns the rows only the rollup has and the rows
    only the seed's query has (both empty when they are identical)."""
    with db.transaction():  # one snapshot for the refresh and the seed's query
        db.execute("SELECT refresh_room_stats_rollup(%s)", (now,))
        only_rollup = db.execute(
            f"SELECT {COLUMNS} FROM room_stats EXCEPT SELECT {COLUMNS} FROM ({SEED_QUERY}) s",
            {"now": now},
        ).fetchall()
        only_seed = db.execute(
            f"SELECT {COLUMNS} FROM ({SEED_QUERY}) s EXCEPT SELECT {COLUMNS} FROM room_stats",
            {"now": now},
        ).fetchall()
    return only_rollup, only_seed


def seed_rows(db, now: datetime) -> list[tuple]:
    return db.execute(f"SELECT {COLUMNS} FROM ({SEED_QUERY}) s", {"now": now}).fetchall()


class Chat:
    """Random chat traffic around a simulated clock."""

    def __init__(self, db, rng: random.Random, now: datetime) -> None:
        self.db, self.rng, self.now = db, rng, now
        self.users = [make_user(db) for _ in range(6)]
        self.rooms = [make_room(db, self.users[0], f"room{i}") for i in range(4)]

    def when(self, most: timedelta) -> datetime:
        """A time up to `most` before the clock (now and then a little after)."""
        if self.rng.random() < 0.05:
            return self.now + timedelta(minutes=self.rng.uniform(0, 30))
        return self.now - most * self.rng.random()

    def messages(self, where: str = "true") -> list[tuple[int, datetime]]:
        return self.db.execute(
            f"SELECT id, created_at FROM messages WHERE {where} ORDER BY id"
        ).fetchall()

    def one(self) -> tuple[int, datetime]:
        """A message, chosen by the test's seed (not the database's random())."""
        if not self.messages():
            self.post()
        return self.rng.choice(self.messages())

    def post(self) -> None:
        """A few messages in one statement: some born deleted, some replies,
        to a message that is not itself a reply (a chain of three deleted in
        one statement makes the thread_count trigger of migration 0001
        update a reply whose parent is already gone: a foreign-key error,
        outside room_stats)."""
        existing = self.messages("parent_message_id IS NULL")
        rows = []
        for _ in range(self.rng.randint(1, 6)):
            parent = self.rng.choice(existing) if existing and self.rng.random() < 0.2 else None
            at = self.when(timedelta(days=9))
            if parent and at < parent[1]:
                at = parent[1]
            rows.append(
                (
                    self.rng.choice(self.rooms),
                    self.rng.choice(self.users),
                    at,
                    self.rng.random() < 0.1,
                    parent[0] if parent else None,
                    parent[1] if parent else None,
                )
            )
        self.db.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at, is_deleted,"
            " parent_message_id, parent_created_at)"
            " SELECT room_id, author_id, 'hello', created_at, is_deleted, pid, pat"
            " FROM unnest(%s::int[], %s::int[], %s::timestamptz[], %s::bool[], %s::int[],"
            "  %s::timestamptz[]) AS t(room_id, author_id, created_at, is_deleted, pid, pat)",
            [list(column) for column in zip(*rows, strict=True)],
        )

    def react(self) -> None:
        existing = self.messages()
        for _ in range(self.rng.randint(1, 5)):
            message = self.rng.choice(existing)
            self.db.execute(
                "INSERT INTO reactions (message_id, message_created_at, user_id, emoji, created_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    *message,
                    self.rng.choice(self.users),
                    self.rng.choice("ab"),
                    self.when(timedelta(hours=30)),
                ),
            )

    def unreact(self) -> None:
        reactions = [row[0] for row in self.db.execute("SELECT id FROM reactions ORDER BY id")]
        if reactions and self.rng.random() < 0.5:  # one reaction
            self.db.execute("DELETE FROM reactions WHERE id = %s", (self.rng.choice(reactions),))
        else:  # all of a user's, in one statement
            self.db.execute(
                "DELETE FROM reactions WHERE user_id = %s", (self.rng.choice(self.users),)
            )

    def soft_delete(self) -> None:
        # Deleting or restoring: either way its reactions go or come back with it.
        self.db.execute(
            "UPDATE messages SET is_deleted = NOT is_deleted, deleted_at = now()"
            " WHERE id = %s AND created_at = %s",
            self.one(),
        )

    def edit(self) -> None:
        self.db.execute(
            "UPDATE messages SET content = 'edited', is_edited = true, edit_count = edit_count + 1"
            " WHERE id = %s AND created_at = %s",
            self.one(),
        )

    def delete(self) -> None:
        """Outright, with its reactions and replies (the foreign keys'
        cascades): one message, or a room's older ones in one statement."""
        if self.rng.random() < 0.6:
            self.db.execute("DELETE FROM messages WHERE id = %s AND created_at = %s", self.one())
        else:
            self.db.execute(
                "DELETE FROM messages WHERE room_id = %s AND created_at < %s",
                (self.rng.choice(self.rooms), self.when(timedelta(days=9))),
            )

    def room(self) -> None:
        """Archived or back, renamed, or joined."""
        room = self.rng.choice(self.rooms)
        change = self.rng.choice(["archive", "rename", "join"])
        if change == "archive":
            self.db.execute("UPDATE rooms SET is_archived = NOT is_archived WHERE id = %s", (room,))
        elif change == "rename":
            self.db.execute(
                "UPDATE rooms SET name = %s WHERE id = %s", (f"r{self.rng.randint(0, 999)}", room)
            )
        else:
            self.db.execute(
                "INSERT INTO room_members (room_id, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (room, self.rng.choice(self.users)),
            )

    def tick(self) -> None:
        """The clock moves on, by minutes or by more than a window."""
        self.now += timedelta(hours=self.rng.choice([0.1, 1, 5, 23, 30, 24 * 3]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_rollup_equals_the_seed_query_after_random_changes_and_time(db, seed):
    make_past_partitions(db)
    rng = random.Random(seed)
    now = db.execute("SELECT date_trunc('hour', now())").fetchone()[0]
    chat = Chat(db, rng, now)
    for _ in range(10):
        chat.post()
    chat.react()
    actions = [
        chat.post,
        chat.post,
        chat.react,
        chat.react,
        chat.unreact,
        chat.soft_delete,
        chat.edit,
        chat.delete,
        chat.room,
        chat.tick,
    ]
    assert refresh_and_compare(db, chat.now) == ([], [])
    nonzero: set[int] = set()  # the columns seen above zero: the comparison had numbers
    for step in range(40):
        for _ in range(rng.randint(1, 4)):  # several changes between refreshes
            rng.choice(actions)()
        assert refresh_and_compare(db, chat.now) == ([], []), f"step {step}"
        nonzero |= {i for row in seed_rows(db, chat.now) for i in (4, 5, 6, 8) if row[i]}
    assert nonzero == {4, 5, 6, 8}
    # The clock alone, no writes: every message and reaction leaves its window.
    for hours in (1, 24, 24 * 7 + 1):
        assert refresh_and_compare(db, chat.now + timedelta(hours=hours)) == ([], [])
    later = seed_rows(db, chat.now + timedelta(hours=24 * 7 + 1))
    assert all(row[4] == row[5] == row[6] == row[8] == 0 for row in later)


def test_a_refresh_without_changes_rewrites_nothing(db):
    make_past_partitions(db)
    now = db.execute("SELECT date_trunc('hour', now())").fetchone()[0]
    chat = Chat(db, random.Random(5), now)
    for _ in range(5):
        chat.post()
    assert db.execute("SELECT refresh_room_stats_rollup(%s)", (now,)).fetchone()[0] > 0
    # A second later nothing changed, nothing crossed a window.
    later = now + timedelta(seconds=1)
    before = db.execute("SELECT * FROM room_stats_rollup ORDER BY room_id").fetchall()
    assert db.execute("SELECT refresh_room_stats_rollup(%s)", (later,)).fetchone()[0] == 0
    assert db.execute("SELECT * FROM room_stats_rollup ORDER BY room_id").fetchall() == before


def test_a_refresh_that_began_before_the_last_one_is_exact_too(db):
    """Two refreshes queue on the lock: the later one can carry an earlier
    now(); the rows between the two window starts come back in."""
    make_past_partitions(db)
    now = db.execute("SELECT date_trunc('hour', now())").fetchone()[0]
    chat = Chat(db, random.Random(9), now)
    for _ in range(10):
        chat.post()
        chat.react()
    assert refresh_and_compare(db, now) == ([], [])
    assert refresh_and_compare(db, now - timedelta(hours=20)) == ([], [])
    assert refresh_and_compare(db, now) == ([], [])


def test_what_no_trigger_sees_makes_the_next_refresh_rebuild(db):
    make_past_partitions(db)
    now = db.execute("SELECT date_trunc('hour', now())").fetchone()[0]
    chat = Chat(db, random.Random(3), now)
    for _ in range(6):
        chat.post()
        chat.react()
    assert refresh_and_compare(db, now) == ([], [])
    db.execute("TRUNCATE reactions")
    assert refresh_and_compare(db, now) == ([], [])
    chat.react()
    assert refresh_and_compare(db, now) == ([], [])
    # Rows deleted behind the triggers' back, then invalidated (as the
    # partition drop does): exact again.
    with db.transaction():  # as the table's owner, not a superuser (CI's role)
        db.execute("ALTER TABLE reactions DISABLE TRIGGER USER")
        db.execute("DELETE FROM reactions WHERE id % 2 = 0")
        db.execute("ALTER TABLE reactions ENABLE TRIGGER USER")
    db.execute("SELECT room_stats_rollup_invalidate()")
    assert refresh_and_compare(db, now) == ([], [])
