"""The purge takes the counters over (migration 0022): its deletes skip the
per-row counter triggers and subtract each batch's totals instead. Counters
must still equal a recount afterwards while chat traffic goes on beside it,
and every other delete must still move them through the triggers."""

from __future__ import annotations

import contextlib
import random
import threading
import time

import psycopg
from psycopg import errors

from db.partitions import add_months, this_month
from tests.factories import make_room, make_user, post, scalar
from tests.maintenance_helpers import counter_mismatches, index_members, run_task

PURGE = "maintenance.purge_retention"
TAKE_OVER = "SELECT set_config('veza.bulk_counters', 'on', true)"


def counts(db, room: int, parent: tuple, reacted: tuple) -> tuple:
    """The room's message_count, the parent's thread_count, and the reacted
    message's reaction_count."""
    return (
        scalar(db, "SELECT message_count FROM rooms WHERE id = %s", (room,)),
        scalar(db, "SELECT thread_count FROM messages WHERE id = %s AND created_at = %s", parent),
        scalar(
            db, "SELECT reaction_count FROM messages WHERE id = %s AND created_at = %s", reacted
        ),
    )


def react(db, message: tuple, user: int) -> None:
    db.execute(
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji)"
        " VALUES (%s, %s, %s, '+1')",
        (*message, user),
    )


def delete_reply_and_reaction(db, reply: tuple, reacted: tuple) -> None:
    db.execute("DELETE FROM messages WHERE id = %s AND created_at = %s", reply)
    db.execute("DELETE FROM reactions WHERE message_id = %s AND message_created_at = %s", reacted)


def test_deletes_outside_the_purge_still_move_the_counters(db):
    alice, bob = make_user(db, "alice"), make_user(db, "bob")
    room = make_room(db, alice)
    parent = post(db, alice, room)
    reply = post(db, bob, room, parent=parent)
    react(db, parent, bob)
    assert counts(db, room, parent, parent) == (2, 1, 1)

    # Another session has taken the counters over, in a transaction still open:
    # that is its own business, not this session's.
    with psycopg.connect(db.info.dsn) as bulk:
        bulk.execute(TAKE_OVER)
        delete_reply_and_reaction(db, reply, parent)
        assert counts(db, room, parent, parent) == (1, 0, 0)

    # This session took them over once; the setting ended with that
    # transaction, and the next deletes count again.
    reply = post(db, bob, room, parent=parent)
    react(db, parent, bob)
    with db.transaction():
        db.execute(TAKE_OVER)
    delete_reply_and_reaction(db, reply, parent)
    assert counts(db, room, parent, parent) == (1, 0, 0)
    assert counter_mismatches(db) == []


def test_a_bulk_delete_leaves_the_counters_to_its_transaction(db):
    """The other half of the contract: inside a transaction that took the
    counters over, a DELETE moves none of them (the purge subtracts them)."""
    alice = make_user(db, "alice")
    room = make_room(db, alice)
    parent = post(db, alice, room)
    reply = post(db, alice, room, parent=parent)
    react(db, parent, alice)
    with db.transaction(force_rollback=True):
        db.execute(TAKE_OVER)
        delete_reply_and_reaction(db, reply, parent)
        assert counts(db, room, parent, parent) == (2, 1, 1)


class ChatTraffic(threading.Thread):
    """Another connection chatting while the purge runs: posts and deletes
    in the purged rooms, reactions added and removed, and deletes (hard and
    soft) of `doomed`, old messages the purge is about to delete, so that
    some rows are gone, or stop counting, under the purge's feet."""

    def __init__(
        self, dsn: str, rooms: list[int], author: int, doomed: list[tuple], reacting: bool = True
    ) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rooms, self.author, self.reacting = dsn, rooms, author, reacting
        self.doomed = list(doomed)
        self.operations = 0
        self.stopping = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stopping.is_set():
                    self.chat(conn)
                    self.operations += 1
        except Exception as error:  # noqa: BLE001 - re-raised by stop(), in the test's thread
            self.error = error

    def chat(self, conn: psycopg.Connection) -> None:
        posted = post(conn, self.author, random.choice(self.rooms))
        if self.reacting:
            react(conn, posted, self.author)
        if self.reacting and self.operations % 3 == 0:
            conn.execute(
                "DELETE FROM reactions WHERE message_id = %s AND message_created_at = %s",
                posted,
            )
        if self.operations % 4 == 0:
            conn.execute("DELETE FROM messages WHERE id = %s AND created_at = %s", posted)
        if self.doomed:
            # A message past retention, deleted (or soft-deleted) by its
            # author while the purge is at it: whichever commits first, it
            # must leave the counters once.
            gone = self.doomed.pop()
            statement = (
                "DELETE FROM messages"
                if self.operations % 2
                else "UPDATE messages SET is_deleted = true"
            )
            conn.execute(statement + " WHERE id = %s AND created_at = %s", gone)
            # One more, reacted to: if the purge got there first, the
            # reaction fails, as it would for any message that is gone.
            with contextlib.suppress(errors.ForeignKeyViolation, IndexError):
                react(conn, self.doomed.pop(), self.author)

    def stop(self) -> int:
        self.stopping.set()
        self.join()
        if self.error:
            raise self.error
        return self.operations


def purge_beside(db, traffic: ChatTraffic) -> dict:
    """The purge, with `traffic` chatting from before it starts until it ends;
    returns the purge's result. The traffic must have overlapped it."""
    traffic.start()
    while traffic.operations < 5 and traffic.is_alive():
        time.sleep(0.01)
    before = traffic.operations
    result = run_task(PURGE)
    during = traffic.operations - before
    traffic.stop()
    assert during > 0
    return result


def reaction_count_mismatches(db) -> list[tuple]:
    return db.execute(
        "SELECT m.id, m.reaction_count, count(r.id) FROM messages m"
        " LEFT JOIN reactions r ON r.message_id = m.id AND r.message_created_at = m.created_at"
        " GROUP BY m.id, m.created_at, m.reaction_count HAVING m.reaction_count <> count(r.id)"
    ).fetchall()


def recount_member(rooms: list[int], author: int) -> None:
    """What messages.index does after a post or a delete by `author`."""
    from sqlalchemy import text

    from db.engine import session_scope
    from veza.messages.counters import MEMBER_MESSAGES

    with session_scope() as session:
        session.execute(
            text(MEMBER_MESSAGES.fix("rm.room_id = ANY(:rooms) AND rm.user_id = :author")),
            {"rooms": rooms, "author": author},
        )


def recount_threads(db) -> None:
    """Parents' thread_count after replies were made by UPDATE (which the
    counter trigger does not watch)."""
    db.execute(
        "UPDATE messages p SET thread_count = c.n, is_thread_root = true FROM ("
        " SELECT parent_message_id, parent_created_at, count(*) AS n FROM messages"
        " WHERE parent_message_id IS NOT NULL AND NOT is_deleted GROUP BY 1, 2) c"
        " WHERE p.id = c.parent_message_id AND p.created_at = c.parent_created_at"
    )


def old_threads(db, rooms: list[int], author: int, per_room: int) -> None:
    """In each room, `per_room` messages two to three days old, every third a
    reply to the one before, each with a reaction, and a young reply to the
    oldest (it outlives its parent)."""
    for room in rooms:
        db.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at)"
            " SELECT %s, %s, 'old ' || g, now() - interval '2 days' - g * interval '1 minute'"
            " FROM generate_series(1, %s) g",
            (room, author, per_room),
        )
        db.execute(
            "UPDATE messages c SET parent_message_id = p.id, parent_created_at = p.created_at"
            " FROM messages p WHERE c.room_id = %s AND p.room_id = c.room_id"
            " AND c.id %% 3 = 0 AND p.id = c.id + 1",
            (room,),
        )
        recount_threads(db)
        oldest = db.execute(
            "SELECT id, created_at FROM messages WHERE room_id = %s ORDER BY created_at LIMIT 1",
            (room,),
        ).fetchone()
        post(db, author, room, parent=oldest)
    db.execute(
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji)"
        " SELECT id, created_at, author_id, '+1' FROM messages"
        " WHERE content LIKE 'old %%' AND author_id = %s",
        (author,),
    )


def test_counters_equal_a_recount_after_a_purge_beside_chat_traffic(mdb):
    db = mdb
    # The empty past months go first, so that this purge is its room batches
    # only (the month drop beside traffic is the next test).
    run_task(PURGE)
    owner, victim, chatter = make_user(db, "owner"), make_user(db, "victim"), make_user(db)
    rooms = [make_room(db, owner, f"short{i}", message_retention_days=1) for i in range(4)]
    old_threads(db, rooms, owner, 600)  # over one batch per room
    old_threads(db, rooms, victim, 20)
    doomed = db.execute(
        "SELECT id, created_at FROM messages WHERE author_id = %s AND content LIKE 'old %%'"
        " ORDER BY random()",
        (victim,),
    ).fetchall()
    index_members(db)

    result = purge_beside(db, ChatTraffic(db.info.dsn, rooms, chatter, doomed))
    # messages.index's recount after the victim's own deletes (its pairs only).
    recount_member(rooms, victim)

    assert scalar(db, "SELECT count(*) FROM messages WHERE content LIKE 'old %%'") == 0
    assert result["counts"]["messages_deleted"] > 0
    assert counter_mismatches(db) == []
    assert reaction_count_mismatches(db) == []
    # The owner's counters were left to the purge alone: none was recounted.
    assert scalar(
        db, "SELECT sum(message_count) FROM room_members WHERE user_id = %s", (owner,)
    ) == len(rooms)  # the young replies


def test_counters_equal_a_recount_after_a_month_drop_beside_chat_traffic(mdb):
    db = mdb
    owner, chatter = make_user(db, "owner"), make_user(db)
    rooms = [make_room(db, owner, f"short{i}", message_retention_days=30) for i in range(3)]
    old_month = add_months(this_month(), -4)
    partition = f"messages_y{old_month.year:04d}m{old_month.month:02d}"
    for room in rooms:
        db.execute(
            "INSERT INTO messages (room_id, author_id, content, created_at)"
            " SELECT %s, %s, 'old ' || g, %s::timestamptz + g * interval '1 minute'"
            " FROM generate_series(1, 700) g",
            (room, owner, f"{old_month.isoformat()} 00:00:00+00"),
        )
    # Replies from the dropped month into a kept one and the other way.
    young = post(db, owner, rooms[0])
    old = db.execute(
        "SELECT id, created_at FROM messages WHERE content = 'old 7' ORDER BY id LIMIT 1"
    ).fetchone()
    young_reply = post(db, owner, rooms[0], parent=old)
    db.execute(
        "UPDATE messages SET parent_message_id = %s, parent_created_at = %s"
        " WHERE content = 'old 9'",
        young,
    )
    db.execute(
        "INSERT INTO reactions (message_id, message_created_at, user_id, emoji)"
        " SELECT id, created_at, author_id, '+1' FROM messages"
    )
    index_members(db)
    recount_threads(db)
    assert counter_mismatches(db) == []

    # Posts and deletes only: a reaction insert and the DETACH ... CONCURRENTLY
    # of a month deadlock in PostgreSQL's own locking (the reaction's foreign
    # key check locks every partition of messages, then its trigger asks for
    # more), whatever the counters do; reactions beside a purge are the test
    # above.
    traffic = ChatTraffic(db.info.dsn, rooms, chatter, [], reacting=False)
    result = purge_beside(db, traffic)

    assert result["counts"]["message_partitions_dropped"] >= 1
    assert scalar(db, "SELECT to_regclass(%s)", (partition,)) is None
    assert scalar(db, "SELECT count(*) FROM messages WHERE content LIKE 'old %%'") == 0
    assert scalar(db, "SELECT count(*) FROM archived_messages") == 2100
    assert scalar(db, "SELECT count(*) FROM archived_reactions") == 2100
    assert (
        scalar(db, "SELECT parent_message_id FROM messages WHERE id = %s", (young_reply[0],))
        is None
    )
    assert counter_mismatches(db) == []
    assert reaction_count_mismatches(db) == []
