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

from db.engine import session_scope
from veza.messages.counters import DM_UNREAD, MEMBER_MESSAGES, Counter, last_seen
from veza.maintenance.run import Run


@dataclass(frozen=True)
class Recount:
    """One counter's pass: the counter, its table's natural key (the order
    of the batches) and the name its fixes are counted under."""

    counter: Counter
    key: tuple[str, ...]
    name: str

    def next_batch(self, locking: bool) -> str:
        """The ids and keys of the next `:size` rows after the key
        `:after_0, :after_1, ...`."""
        key = sql.SQL(", ").join(map(sql.Identifier, self.key))
        after = sql.SQL(", ").join(sql.SQL(f":after_{i}") for i in range(len(self.key)))
        return sql.SQL("SELECT id, {key} FROM {table} WHERE ({key}) > ({after})"
                       " ORDER BY {key} LIMIT :size{lock}").format(
            key=key, table=sql.Identifier(self.counter.table), after=after,
            lock=sql.SQL(" FOR NO KEY UPDATE SKIP LOCKED" if locking else ""),
        ).as_string()

    def rows(self) -> str:
        """The condition selecting the batch's rows, by id."""
        return sql.SQL("{}.id = ANY(CAST(:ids AS integer[]))").format(
            sql.Identifier(self.counter.alias)).as_string()


RECOUNTS = (
    Recount(MEMBER_MESSAGES, ("room_id", "user_id"), "member_counts_fixed"),
    Recount(DM_UNREAD, ("conversation_id", "user_id"), "unread_counts_fixed"),
    # At least the author's latest message, as messages.index leaves it.
    Recount(last_seen("(SELECT max(m.created_at) FROM messages m WHERE m.author_id = u.id)"),
            ("id",), "last_seen_fixed"),
)


def recount(run: Run) -> None:
    for job in RECOUNTS:
        recount_table(run, job)


def recount_table(run: Run, job: Recount) -> None:
    """Every row of the counter's table, in key order, a batch per transaction."""
    run.add(**{job.name: 0})  # reported even when nothing was wrong
    # The keys are serial ids, all positive: zeros come before the first row.
    after = (0,) * len(job.key)
    find = text(job.next_batch(locking=not run.dry_run))  # a dry run locks nothing either
    change = text(job.counter.count_wrong(job.rows()) if run.dry_run
                  else job.counter.fix(job.rows()))
    for size in run.batches():
        with session_scope() as session:
            params = {f"after_{i}": value for i, value in enumerate(after)}
            batch = session.execute(find, {**params, "size": size}).all()
            if not batch:
                return
            result = session.execute(change, {"ids": [row.id for row in batch]})
            run.add(**{job.name: result.scalar_one() if run.dry_run else result.rowcount})
        if len(batch) < size:
            return
        after = tuple(batch[-1])[1:]
