"""The counters messages.index keeps, recounted in full: a safety net.

room_members.message_count, DM unread_count and users.last_seen_at have no
trigger: messages.index sets them after each post, through the outbox and
Redis. Work Redis lost (a restart without persistence, an eviction, a poison
drop), or an outbox row given up on, leaves a counter wrong until the author
posts again. This pass needs none of that: it walks each table in the order
of its natural key, a batch per transaction, and writes the value
veza/messages/counters.py defines (the definition the per-message task uses) where
the row holds another. Counts: rows fixed per counter; a dry run counts the
rows it would fix.

Each batch first locks its rows (FOR NO KEY UPDATE SKIP LOCKED: a row a
chat write holds is left for the next run, so the pass never waits on chat
traffic; NO KEY, so a message insert's foreign-key check on `users` never
waits on it either), then recounts them in a second statement, whose
snapshot is taken after the locks: a messages.index that committed before
is seen, one that comes later waits for the batch and recounts after it.
Counting in the locking statement itself would read a snapshot from before
the lock, and could write a count that misses a message indexed meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql
from sqlalchemy import text

from db.engine import affected
from veza.maintenance.batched import KeysetBatches
from veza.maintenance.run import Run
from veza.messages.counters import DM_UNREAD, MEMBER_MESSAGES, Counter, last_seen
from veza.statements import identifiers


@dataclass(frozen=True)
class Recount:
    """One counter's pass: the counter, its table's natural key (the order
    of the batches) and the name its fixes are counted under."""

    counter: Counter
    key: tuple[str, ...]
    name: str

    def batches(self, run: Run) -> KeysetBatches:
        """The ids of its table's rows, in key order, a batch per
        transaction; locked in a real run (a dry run locks nothing either)."""
        lock = "" if run.dry_run else " FOR NO KEY UPDATE SKIP LOCKED"
        return KeysetBatches(
            run,
            "SELECT {columns} FROM {table} WHERE {after} ORDER BY {key} LIMIT :size" + lock,
            key=self.key,
            table=sql.Identifier(self.counter.table),
            columns=identifiers(dict.fromkeys(("id", *self.key))),
        )

    def rows(self) -> str:
        """The condition selecting the batch's rows, by id."""
        return (
            sql.SQL("{}.id = ANY(CAST(:ids AS integer[]))")
            .format(sql.Identifier(self.counter.alias))
            .as_string()
        )


RECOUNTS = (
    Recount(MEMBER_MESSAGES, ("room_id", "user_id"), "member_counts_fixed"),
    Recount(DM_UNREAD, ("conversation_id", "user_id"), "unread_counts_fixed"),
    # At least the author's latest message, as messages.index leaves it.
    Recount(
        last_seen("(SELECT max(m.created_at) FROM messages m WHERE m.author_id = u.id)"),
        ("id",),
        "last_seen_fixed",
    ),
)


def recount(run: Run) -> None:
    for job in RECOUNTS:
        recount_table(run, job)


def recount_table(run: Run, job: Recount) -> None:
    """Every row of the counter's table, in key order, a batch per transaction."""
    run.add(**{job.name: 0})  # reported even when nothing was wrong
    change = text(
        job.counter.count_wrong(job.rows()) if run.dry_run else job.counter.fix(job.rows())
    )
    for session, batch in job.batches(run):
        result = session.execute(change, {"ids": [row.id for row in batch]})
        run.add(**{job.name: result.scalar_one() if run.dry_run else affected(result)})
