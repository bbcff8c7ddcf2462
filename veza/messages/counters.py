"""The bookkeeping a message post (or delete) owes, done after commit
through the outbox by messages.index (tasks/messages.py).

Everything it writes is a recount or a GREATEST, never an increment, so
running it twice (at-least-once delivery) or late (after a Redis outage)
leaves the same result:
  - the author's room_members.message_count = their live messages in the room;
  - in a DM, each other participant's unread_count = live messages from
    others after their last read marker;
  - the author's users.last_seen_at moves up to the message's time.
A message that no longer exists is simply nothing to do. If the message
is lost on its way (Redis restarted without persistence), the daily
maintenance.recount_counters sets the same counters from the same
definitions (`Counter` below).

messages.index runs many messages at a time (`index_messages`): one
statement per kind of counter for the whole batch, each locking the rows it
recounts in primary-key order first, so that two batches sharing an author
or a conversation wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Counter:
    """A counter messages.index keeps: `column` of `table` (aliased `alias`),
    and `value`, the SQL of its correct value over that alias. One definition
    serves both the per-message statements below and the full recount of
    whole batches (veza/messages/recount.py). Either writes only the rows
    whose counter is wrong: a correct row costs no write, and the rowcount is
    what was fixed."""

    table: str
    alias: str
    column: str
    value: str

    def fix(self, rows: str) -> str:
        """UPDATE the rows the condition `rows` selects, where wrong."""
        return self._compose(
            "UPDATE {table} AS {alias} SET {column} = {value} WHERE ({rows}) AND {wrong}", rows
        )

    def fix_in_order(self, rows: str, key: tuple[str, ...]) -> str:
        """fix(), for many rows at once: they are locked first, in the order
        of `key` (the table's primary key), so that two batches touching
        some of the same rows wait for each other instead of deadlocking."""
        columns = sql.SQL(", ").join(sql.Identifier(self.alias, name) for name in key)
        return self._compose(
            "WITH locked AS MATERIALIZED ("
            "SELECT {columns} FROM {table} AS {alias} WHERE ({rows})"
            " ORDER BY {columns} FOR NO KEY UPDATE)"
            " UPDATE {table} AS {alias} SET {column} = {value} FROM locked"
            " WHERE ({columns}) = ({locked}) AND {wrong}",
            rows,
            columns=columns,
            locked=sql.SQL(", ").join(sql.Identifier("locked", name) for name in key),
        )

    def count_wrong(self, rows: str) -> str:
        """How many of the rows `rows` selects fix() would change."""
        return self._compose(
            "SELECT count(*) FROM {table} AS {alias} WHERE ({rows}) AND {wrong}", rows
        )

    def _compose(self, template: str, rows: str, **parts: sql.Composable) -> str:
        alias, column, value = (
            sql.Identifier(self.alias),
            sql.Identifier(self.column),
            sql.SQL(self.value),
        )
        return (
            sql.SQL(template)
            .format(
                table=sql.Identifier(self.table),
                alias=alias,
                column=column,
                value=value,
                rows=sql.SQL(rows),
                wrong=sql.SQL("{}.{} IS DISTINCT FROM {}").format(alias, column, value),
                **parts,
            )
            .as_string()
        )


# A member's live messages in the room.
MEMBER_MESSAGES = Counter(
    "room_members",
    "rm",
    "message_count",
    """(
    SELECT count(*) FROM messages m
    WHERE m.room_id = rm.room_id AND m.author_id = rm.user_id AND NOT m.is_deleted)""",
)

# A DM participant's unread: live messages from the others after their read marker.
DM_UNREAD = Counter(
    "direct_conversation_participants",
    "p",
    "unread_count",
    """(
    SELECT count(*) FROM messages m
    WHERE m.conversation_id = p.conversation_id AND m.author_id <> p.user_id
      AND NOT m.is_deleted AND m.id > COALESCE(p.last_read_message_id, 0))""",
)


def last_seen(at: str) -> Counter:
    """users.last_seen_at moved up to `at` (SQL over `u`), never down."""
    return Counter("users", "u", "last_seen_at", f"GREATEST(u.last_seen_at, {at})")


RECOUNT_ROOM_MEMBER = MEMBER_MESSAGES.fix("rm.room_id = :room_id AND rm.user_id = :author_id")
# Only messages from others count as unread: the author's own row is not touched.
RECOUNT_DM_UNREAD = DM_UNREAD.fix(
    "p.conversation_id = :conversation_id AND p.user_id <> :author_id"
)


# The messages of a batch (:ids) that still exist, as the statements below read them.
BATCH = (
    "SELECT b.room_id, b.conversation_id, b.author_id, b.created_at"
    " FROM messages b WHERE b.id = ANY(:ids)"
)
# Each statement fixes one kind of counter for the whole batch.
BATCH_FIXES = (
    MEMBER_MESSAGES.fix_in_order(
        f"(rm.room_id, rm.user_id) IN (SELECT b.room_id, b.author_id FROM ({BATCH}) b)",
        ("room_id", "user_id"),
    ),
    # Only messages from others count as unread: an author's own row is not touched.
    DM_UNREAD.fix_in_order(
        f"EXISTS (SELECT FROM ({BATCH}) b"
        " WHERE b.conversation_id = p.conversation_id AND b.author_id <> p.user_id)",
        ("conversation_id", "user_id"),
    ),
    last_seen(f"(SELECT max(b.created_at) FROM ({BATCH}) b WHERE b.author_id = u.id)").fix_in_order(
        f"u.id IN (SELECT b.author_id FROM ({BATCH}) b)", ("id",)
    ),
)


def index_messages(session: Session, message_ids: Sequence[int]) -> list[int]:
    """Apply the bookkeeping of these messages, one statement per kind of
    counter for them all; the ids of those that still exist, in order."""
    found = sorted(
        session.scalars(
            text("SELECT id FROM messages WHERE id = ANY(:ids)"), {"ids": list(message_ids)}
        )
    )
    if found:
        for fix in BATCH_FIXES:
            session.execute(text(fix), {"ids": found})
    return found


# ------------------------------------------------------------ bulk deletes

# A transaction that removes messages in bulk (the retention purge) takes
# their counters over: the per-row DELETE triggers stand aside for it
# (migration 0022), and it subtracts what it removed, one statement per
# batch (REMOVED_MESSAGE_COUNTERS). Transaction-scoped: other sessions, and
# this connection's next transaction, keep the triggers.
TAKE_OVER_COUNTERS = "SELECT set_config('veza.bulk_counters', 'on', true)"

# What the removed messages (a relation `removed` with messages' columns)
# took out of each counter: the DELETE trigger's own (the room's or
# conversation's message_count, the parent's thread_count, for a parent
# still there) and messages.index's (the member's message_count, the DM
# participants' unread_count, MEMBER_MESSAGES and DM_UNREAD above). Each is a
# named WITH part of one statement; only live (not soft-deleted) rows ever
# counted. Subtracting, not recounting, so that a concurrent chat post in the
# same room, counted by its own trigger, is not lost.
REMOVED_MESSAGE_COUNTERS = """
removed_live AS (SELECT * FROM removed WHERE NOT is_deleted),
by_author AS (
    SELECT room_id, conversation_id, author_id, count(*) AS n FROM removed_live
    GROUP BY room_id, conversation_id, author_id),
room_counts AS (
    UPDATE rooms r SET message_count = r.message_count - g.n
    FROM (SELECT room_id, sum(n) AS n FROM by_author WHERE room_id IS NOT NULL
          GROUP BY room_id) g
    WHERE r.id = g.room_id),
conversation_counts AS (
    UPDATE direct_conversations c SET message_count = c.message_count - g.n
    FROM (SELECT conversation_id, sum(n) AS n FROM by_author
          WHERE conversation_id IS NOT NULL GROUP BY conversation_id) g
    WHERE c.id = g.conversation_id),
thread_counts AS (
    UPDATE messages p SET thread_count = p.thread_count - g.n,
        is_thread_root = p.thread_count - g.n > 0
    FROM (SELECT parent_message_id, parent_created_at, count(*) AS n FROM removed_live
          WHERE parent_message_id IS NOT NULL
          GROUP BY parent_message_id, parent_created_at) g
    WHERE p.id = g.parent_message_id AND p.created_at = g.parent_created_at
      AND NOT EXISTS (SELECT 1 FROM removed x WHERE x.id = p.id AND x.created_at = p.created_at)),
member_counts AS (
    UPDATE room_members rm SET message_count = rm.message_count - g.n
    FROM by_author g
    WHERE rm.room_id = g.room_id AND rm.user_id = g.author_id),
unread_counts AS (
    UPDATE direct_conversation_participants p SET unread_count = p.unread_count - g.n
    FROM (SELECT p.conversation_id, p.user_id, count(*) AS n
          FROM removed_live x JOIN direct_conversation_participants p
            ON p.conversation_id = x.conversation_id AND p.user_id <> x.author_id
           AND x.id > COALESCE(p.last_read_message_id, 0)
          GROUP BY p.conversation_id, p.user_id) g
    WHERE p.conversation_id = g.conversation_id AND p.user_id = g.user_id)
"""
