"""Message retention: archive, then delete, in short keyset batches; restore
from the archive; purge the archive after its window.

In the manner of Zulip's zerver/lib/retention.py: messages go to archive
tables first, in the same transaction as their deletion, so a batch either
happened entirely or not at all (kill-safe), and an archived message can be
put back until ARCHIVE_RETENTION_DAYS after it was archived.

What goes with a message:
- reactions and file rows are archived with it (the foreign keys' ON DELETE
  CASCADE then removes the live rows); a file's blob stays on disk while an
  archived row holds its hash, and the orphan sweep removes it afterwards;
- mentions are derived from messages.mentions by a trigger, so they are
  rebuilt on restore and need no archive;
- replies past the cut-off go with their parent (same batch, or the
  cascade would delete them un-archived); a reply younger than the cut-off
  stays, detached from its parent, with the link kept in
  archived_reply_links so that a restore re-attaches it.

Counters: a chat delete moves them through the per-row triggers; the purge
takes them over instead (veza.bulk_counters, migration 0022) and subtracts
each batch's totals in the batch's own DELETE statement
(counters.REMOVED_MESSAGE_COUNTERS: rooms' and conversations' message_count,
parents' thread_count, members' message_count, DM unread_count), so it
updates a room's row once per batch, not once per message. A whole monthly
partition dropped fires no trigger at all: the same subtraction runs over the
detached table in the DROP's transaction. Restores insert, and the insert
triggers count them; the member and DM counters, which messages.index keeps
by recount, are recounted for the pairs a restored batch touched.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session

from db.engine import affected, libpq_url, session_scope
from db.models import File, Message, Reaction
from db.partitions import (
    add_months,
    create_monthly_partitions,
    creating_missing_partitions,
    month_of,
    months_behind,
    months_between,
    this_month,
)
from veza.maintenance import partition_upkeep
from veza.maintenance.batched import KeysetBatches, apply_in_batches
from veza.maintenance.run import Run, timed_batches
from veza.messages.counters import (
    RECOUNT_DM_UNREAD,
    RECOUNT_ROOM_MEMBER,
    REMOVED_MESSAGE_COUNTERS,
    TAKE_OVER_COUNTERS,
)
from veza.settings import get_settings
from veza.statements import compose, identifiers

log = logging.getLogger(__name__)

MESSAGE_COLUMNS = [c.name for c in Message.__table__.columns]
REACTION_COLUMNS = [c.name for c in Reaction.__table__.columns]
FILE_COLUMNS = [c.name for c in File.__table__.columns]

# The batch as a relation `d(id, created_at)`, from two parallel arrays.
BATCH = sql.SQL(
    "d AS (SELECT * FROM unnest(CAST(:ids AS integer[]), CAST(:ts AS timestamptz[]))"
    " AS d(id, created_at))"
)
Batch = list[tuple[int, datetime]]
# Messages are walked in the order of their primary key.
MESSAGE_KEY = ("created_at", "id")


def over_batch(template: str, **parts: sql.Composable) -> TextClause:
    """A statement `WITH {batch} ...`: one over the batch relation `d`."""
    return compose(template, batch=BATCH, **parts)


def batch_authors(session: Session, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The distinct (room or conversation, author) pairs of a batch."""
    return [
        dict(row)
        for row in session.execute(
            over_batch(
                "WITH {batch} SELECT DISTINCT m.room_id, m.conversation_id, m.author_id"
                " FROM messages m JOIN d ON m.id = d.id AND m.created_at = d.created_at"
            ),
            params,
        ).mappings()
    ]


def recount_member_counters(session: Session, authors: list[dict[str, Any]]) -> None:
    """messages.index's recounts, for every pair a restored batch touched: a room
    member's message_count, and in a DM the others' unread_count (only
    messages from others count as unread, so the author's pair suffices)."""
    in_rooms = [
        {"room_id": a["room_id"], "author_id": a["author_id"]}
        for a in authors
        if a["room_id"] is not None
    ]
    in_conversations = [
        {"conversation_id": a["conversation_id"], "author_id": a["author_id"]}
        for a in authors
        if a["conversation_id"] is not None
    ]
    if in_rooms:
        session.execute(text(RECOUNT_ROOM_MEMBER), in_rooms)
    if in_conversations:
        session.execute(text(RECOUNT_DM_UNREAD), in_conversations)


def batch_params(batch: Batch) -> dict[str, Any]:
    return {"ids": [row[0] for row in batch], "ts": [row[1] for row in batch]}


# ---------------------------------------------------------------- purge


def purge(run: Run) -> None:
    """The whole purge_retention task, in four phases, each with its own
    share of the run's time (veza/maintenance/run.py), so that a huge
    month cannot starve the per-room purges or the archive's: whole
    partitions where every room's retention covers them, then per-room
    batches, then the archive's and the audit log's own retention. Every
    phase resumes where an earlier run stopped: deleted rows are gone, and
    a partition's unlinking skips the rows it already dealt with."""
    with run.phase("partition_drop", left=4):
        dropping = drop_covered_message_partitions(run)
    # A dry run deleted nothing: the rows of the months it would drop whole
    # are still there, and were counted already.
    already_counted = [p.name for p in dropping] if run.dry_run else []
    with run.phase("room_batches", left=3):
        rooms = rooms_with_retention()
        run.expect(count_beyond_retention(rooms, already_counted), of="messages_deleted")
        for room_id, cutoff in rooms:
            if not purge_room(run, room_id, cutoff, already_counted):
                break
    with run.phase("archive_purge", left=2):
        purge_archive(run)
    with run.phase("audit_partitions", left=1):
        partition_upkeep.drop_old_audit_partitions(run)


def rooms_with_retention() -> list[tuple[int, datetime]]:
    with session_scope() as session:
        return [
            tuple(row)
            for row in session.execute(
                text(
                    "SELECT id, now() - make_interval(days => message_retention_days) FROM rooms"
                    " WHERE message_retention_days > 0 ORDER BY id"
                )
            )
        ]


def count_beyond_retention(rooms: list[tuple[int, datetime]], skip_partitions: list[str]) -> int:
    """How many messages the per-room batches have to go through: what
    the run's progress counts up to. One index range scan per room."""
    if not rooms:
        return 0
    with session_scope() as session:
        total: int = session.execute(
            text(
                "SELECT count(*) FROM messages m"
                " JOIN unnest(CAST(:rooms AS integer[]), CAST(:cutoffs AS timestamptz[]))"
                " AS r(id, cutoff) ON m.room_id = r.id AND m.created_at < r.cutoff"
                " WHERE NOT (m.tableoid::regclass::text = ANY(CAST(:skip AS text[])))"
            ),
            {
                "rooms": [room for room, _ in rooms],
                "cutoffs": [cutoff for _, cutoff in rooms],
                "skip": skip_partitions,
            },
        ).scalar_one()
    return total


def purge_room(
    run: Run, room_id: int, cutoff: datetime, skip_partitions: list[str] | tuple[str, ...] = ()
) -> bool:
    """Archive and delete the room's messages older than `cutoff`, oldest
    first, one batch per transaction; True when none are left, False when
    the phase ran out of time first. The cut-off is fixed for the run, so
    the end state does not depend on how long the run took."""
    batches = KeysetBatches(
        run,
        (
            "SELECT id, created_at FROM messages"
            " WHERE room_id = :room AND created_at < :cutoff AND {after}"
            " AND NOT (tableoid::regclass::text = ANY(CAST(:skip AS text[])))"
            " ORDER BY {key} LIMIT :size"
        ),
        {"room": room_id, "cutoff": cutoff, "skip": list(skip_partitions)},
        key=MESSAGE_KEY,
    )
    for session, rows in batches:
        batch = [tuple(row) for row in rows]
        if run.dry_run:
            count_batch(run, session, batch, cutoff)
        else:
            archive_and_delete(run, session, batch, cutoff)
    return batches.exhausted


def with_old_replies(session: Session, batch: Batch, cutoff: datetime) -> Batch:
    """The batch plus every reply under it that is also past the cut-off
    (deleting a parent cascades to its replies, so they are archived now)."""
    return [
        tuple(row)
        for row in session.execute(
            text(
                "WITH RECURSIVE doomed(id, created_at) AS ("
                " SELECT * FROM unnest(CAST(:ids AS integer[]), CAST(:ts AS timestamptz[]))"
                " UNION"
                " SELECT c.id, c.created_at FROM messages c"
                " JOIN doomed"
                "  ON c.parent_message_id = doomed.id AND c.parent_created_at = doomed.created_at"
                " WHERE c.created_at < :cutoff"
                ") SELECT id, created_at FROM doomed"
            ),
            {**batch_params(batch), "cutoff": cutoff},
        )
    ]


def count_batch(run: Run, session: Session, batch: Batch, cutoff: datetime) -> None:
    counts = session.execute(
        over_batch(
            "WITH {batch} SELECT"
            " (SELECT count(*) FROM reactions r"
            "  JOIN d ON r.message_id = d.id AND r.message_created_at = d.created_at),"
            " (SELECT count(*) FROM files f"
            "  JOIN d ON f.message_id = d.id AND f.message_created_at = d.created_at),"
            " (SELECT count(*) FROM messages c JOIN d ON c.parent_message_id = d.id"
            "  AND c.parent_created_at = d.created_at WHERE c.created_at >= :cutoff)"
        ),
        {**batch_params(batch), "cutoff": cutoff},
    ).one()
    run.add(
        messages_deleted=len(batch),
        archived_messages=len(batch),
        archived_reactions=counts[0],
        archived_files=counts[1],
        replies_detached=counts[2],
    )


def archive_and_delete(run: Run, session: Session, batch: Batch, cutoff: datetime) -> None:
    take_over_counters(session)
    doomed = with_old_replies(session, batch, cutoff)
    params = {**batch_params(doomed), "cutoff": cutoff}
    detached = detach_replies(session, params, "c.created_at >= :cutoff")
    archived = archive_rows(session, params)
    deleted = session.execute(DELETE_BATCH, params).scalar_one()
    run.add(messages_deleted=deleted, replies_detached=detached, **archived)


def take_over_counters(session: Session) -> None:
    """This transaction's deletes leave the counter triggers out (migration
    0022): the batch subtracts its own totals, once per counter row."""
    session.execute(text(TAKE_OVER_COUNTERS))


# The batch's messages go, and what they counted with them: the counters are
# fixed from the rows the DELETE itself returns, so a message a chat session
# deleted (or soft-deleted) first, and counted out itself, is not subtracted
# twice. Their reactions, files, mentions, notifications and reports go by
# the foreign keys' cascade (archived before, in archive_rows); the reaction
# trigger stands aside too, its messages being gone.
DELETE_BATCH = over_batch(
    "WITH {batch},"
    " removed AS (DELETE FROM messages m USING d"
    "  WHERE m.id = d.id AND m.created_at = d.created_at RETURNING m.*),"
    " {counters}"
    " SELECT count(*) FROM removed",
    counters=sql.SQL(REMOVED_MESSAGE_COUNTERS),
)


def detach_replies(session: Session, params: dict[str, Any], which: str) -> int:
    """Keep replies that must outlive their parent: record the link and
    detach them, in one statement (an UPDATE of the parent columns fires no
    counter trigger; the parent is about to go, so its thread_count goes
    with it). `which`: the SQL condition on the reply `c` that picks them."""
    return int(
        session.execute(
            over_batch(
                "WITH {batch},"
                # Found once: a reply may be in any month, so each lookup
                # probes every partition's index on the parent.
                " replies AS (SELECT c.id, c.created_at, c.parent_message_id, c.parent_created_at"
                "  FROM messages c"
                "  JOIN d ON c.parent_message_id = d.id AND c.parent_created_at = d.created_at"
                "  WHERE {which}),"
                " links AS (INSERT INTO archived_reply_links"
                "  (message_id, message_created_at, parent_message_id, parent_created_at)"
                "  SELECT * FROM replies ON CONFLICT DO NOTHING),"
                " detached AS (UPDATE messages c"
                "  SET parent_message_id = NULL, parent_created_at = NULL"
                "  FROM replies r WHERE c.id = r.id AND c.created_at = r.created_at RETURNING 1)"
                " SELECT count(*) FROM detached",
                which=sql.SQL(which),
            ),
            params,
        ).scalar_one()
    )


# What archive_rows copies: the count's name, the live table and its
# columns, and how a live row `x` belongs to the batch `d`.
ARCHIVE_COPIES = {
    "archived_messages": (
        "messages",
        MESSAGE_COLUMNS,
        "x.id = d.id AND x.created_at = d.created_at",
    ),
    "archived_reactions": (
        "reactions",
        REACTION_COLUMNS,
        "x.message_id = d.id AND x.message_created_at = d.created_at",
    ),
    "archived_files": (
        "files",
        FILE_COLUMNS,
        "x.message_id = d.id AND x.message_created_at = d.created_at",
    ),
}


def archive_copy(archive: str) -> sql.Composable:
    """The WITH part that copies the batch's rows of one table to its
    archive. ON CONFLICT: a message archived, restored and purged again."""
    live, names, join = ARCHIVE_COPIES[archive]
    return sql.SQL(
        "{copied} AS (INSERT INTO {archive} ({columns})"
        " SELECT {values} FROM {live} x JOIN d ON {join} ON CONFLICT DO NOTHING RETURNING 1)"
    ).format(
        copied=sql.Identifier(f"copied_{archive}"),
        archive=sql.Identifier(archive),
        columns=identifiers(names),
        values=identifiers(names, "x"),
        live=sql.Identifier(live),
        join=sql.SQL(join),
    )


# The three copies in one statement; it returns how many rows each copied.
ARCHIVE_BATCH = over_batch(
    "WITH {batch}, {copies} SELECT {counts}",
    copies=sql.SQL(", ").join(archive_copy(archive) for archive in ARCHIVE_COPIES),
    counts=sql.SQL(", ").join(
        sql.SQL("(SELECT count(*) FROM {}) AS {}").format(
            sql.Identifier(f"copied_{archive}"), sql.Identifier(archive)
        )
        for archive in ARCHIVE_COPIES
    ),
)


def archive_rows(session: Session, params: dict[str, Any]) -> dict[str, int]:
    """Copy the batch's messages, reactions and file rows to the archive."""
    counts = session.execute(ARCHIVE_BATCH, params).mappings().one()
    return {archive: int(counts[archive]) for archive in ARCHIVE_COPIES}


# ------------------------------------------------------ whole partitions


def drop_covered_message_partitions(run: Run) -> list[partition_upkeep.Partition]:
    """Drop past monthly partitions of messages in which no message would
    survive retention (every room it holds has a retention that covers the
    month, and it holds no direct messages, which are kept forever). An
    empty month inside the partition window (db/partitions.py) stays: it is
    where a backfill lands, and ensure_partitions would only make it again.

    References are dealt with first, in batches (the detach refuses while
    any row references the partition): messages, reactions and file rows are
    archived, reactions, mentions, notifications, reports and file rows
    deleted, replies detached (their links kept for a restore). Then the
    partition is detached concurrently and dropped, with the counters fixed
    in the DROP's transaction because triggers do not fire on DROP. A
    partition whose unlinking ran out of time is left for the next run,
    which resumes it.
    Returns the partitions dropped (or, in a dry run, that would be)."""
    with psycopg.connect(libpq_url(), autocommit=True) as conn:
        for partition in partition_upkeep.leftovers(conn, "messages"):
            finish_message_partition_drop(run, partition)
        candidates = [
            p for p in partition_upkeep.attached(conn, "messages") if p.end <= this_month()
        ]
    window_start = add_months(this_month(), -partition_months_behind())
    dropping = []
    for partition in candidates:
        if not covered_by_retention(partition.name) or (
            partition.month >= window_start and is_empty(partition.name)
        ):
            continue
        run.add(message_partitions_dropped=1)
        dropping.append(partition)
        if not unlink_partition(run, partition):
            break
        if not run.dry_run:
            finish_message_partition_drop(run, partition)
    return dropping


def partition_months_behind() -> int:
    with session_scope() as session:
        return months_behind(session.connection())


def is_empty(name: str) -> bool:
    with session_scope() as session:
        return bool(
            session.execute(
                compose(
                    "SELECT NOT EXISTS (SELECT 1 FROM {partition})",
                    partition=sql.Identifier(name),
                )
            ).scalar_one()
        )


def covered_by_retention(name: str) -> bool:
    with session_scope() as session:
        return bool(
            session.execute(
                compose(
                    "SELECT NOT EXISTS (SELECT 1 FROM {partition} m"
                    " LEFT JOIN rooms r ON r.id = m.room_id"
                    " WHERE r.id IS NULL OR r.message_retention_days = 0"
                    " OR m.created_at >= now() - make_interval(days => r.message_retention_days))",
                    partition=sql.Identifier(name),
                )
            ).scalar_one()
        )


# The tables that reference a message by (message_id, message_created_at):
# a partition's rows must lose these references before its detach.
MESSAGE_REFERENCES = ("reactions", "files", "message_mentions", "notifications", "message_reports")

# The walk over a partition takes the rows not archived yet: a batch archives
# and unlinks its rows in one transaction, so the rows an earlier, stopped
# run archived are unlinked already, and a run resumes where the last one
# stopped at the cost of one index probe per row it skips (an anti-join on
# archived_messages' key). Rows referenced again after their batch (a
# reaction added meanwhile) are found once, after the walk
# (`referenced_again`).
NOT_ARCHIVED = sql.SQL(
    "NOT EXISTS (SELECT 1 FROM archived_messages a"
    " WHERE a.id = m.id AND a.created_at = m.created_at)"
)

# Every reference into the partition, as (id, created_at) of the row it
# references: each referencing table's index on (message_id, ...) scanned
# over the partition's range of ids, the partition's month checked on the
# key's second column; replies by their parent's index. So it costs about
# the references in that range, not a probe per row of the partition.
REFERENCES_INTO = sql.SQL(" UNION ").join(
    [
        *(
            sql.SQL(
                "SELECT message_id, message_created_at FROM {referencing}"
                " WHERE message_id BETWEEN :low AND :high"
                " AND message_created_at >= :start AND message_created_at < :end"
            ).format(referencing=sql.Identifier(referencing))
            for referencing in MESSAGE_REFERENCES
        ),
        sql.SQL(
            "SELECT parent_message_id, parent_created_at FROM messages"
            " WHERE parent_message_id BETWEEN :low AND :high"
            " AND parent_created_at >= :start AND parent_created_at < :end"
        ),
    ]
)


def referenced_again(session: Session, partition: partition_upkeep.Partition) -> Batch:
    """The partition's rows that something references although the walk
    unlinked them (a reaction added to a year-old message after its batch)."""
    low, high = session.execute(
        compose(
            "SELECT min(id), max(id) FROM {partition}", partition=sql.Identifier(partition.name)
        )
    ).one()
    if low is None:
        return []
    return [
        tuple(row)
        for row in session.execute(
            text(REFERENCES_INTO.as_string()),
            {
                "low": low,
                "high": high,
                "start": month_start(partition.month),
                "end": month_start(partition.end),
            },
        )
    ]


def month_start(month: date) -> datetime:
    """The instant a month's partition starts: midnight UTC (db/partitions.py)."""
    return datetime(month.year, month.month, 1, tzinfo=UTC)


# The batch's references go, in one statement. The reaction trigger stands
# aside (take_over_counters): the batch's messages go with their partition,
# and their reaction_count with them, as their thread_count does (the
# replies are detached without counting them out of their parent). Fixing it
# on rows about to be dropped cost a rewrite of every row of the month (an
# UPDATE of 100,000 rows, each index included), most of the unlinking's time.
UNLINK_BATCH = over_batch(
    "WITH {batch}, {deletes} SELECT 1",
    deletes=sql.SQL(", ").join(
        sql.SQL(
            "{referencing} AS (DELETE FROM {referencing} x USING d"
            " WHERE x.message_id = d.id AND x.message_created_at = d.created_at)"
        ).format(referencing=sql.Identifier(referencing))
        for referencing in MESSAGE_REFERENCES
    ),
)


def unlink_partition(run: Run, partition: partition_upkeep.Partition) -> bool:
    """Archive the partition's rows and remove every reference to them, a
    batch per transaction, then the references made again meanwhile; True
    when nothing is left to unlink, False when the phase ran out of time
    first."""
    batches = KeysetBatches(
        run,
        "SELECT id, created_at FROM {partition} m"
        " WHERE {after} AND {left} ORDER BY {key} LIMIT :size",
        key=MESSAGE_KEY,
        partition=sql.Identifier(partition.name),
        # A dry run archives nothing: it counts every row.
        left=sql.SQL("true") if run.dry_run else NOT_ARCHIVED,
    )
    for session, rows in batches:
        if run.dry_run:
            run.add(messages_deleted=len(rows))
        else:
            unlink_batch(run, session, [tuple(row) for row in rows])
    if batches.exhausted and not run.dry_run:
        with session_scope() as session:
            if again := referenced_again(session, partition):
                unlink_batch(run, session, again)
    return batches.exhausted


def unlink_batch(run: Run, session: Session, batch: Batch) -> None:
    params = batch_params(batch)
    take_over_counters(session)
    # Every reply goes, even one inside the partition: the detach refuses
    # while any row references the partition, its own included. The links
    # bring the threads back on restore.
    detached = detach_replies(session, params, "true")
    archived = archive_rows(session, params)
    session.execute(UNLINK_BATCH, params)
    run.add(replies_detached=detached, **archived)


def finish_message_partition_drop(run: Run, partition: partition_upkeep.Partition) -> None:
    run.add(
        messages_deleted=partition_upkeep.drop("messages", partition, before_drop=subtract_counters)
    )


def subtract_counters(session: Session, name: str) -> int:
    """The detached partition's messages leave every counter they were in
    (the same subtraction as a purge batch's); returns how many rows the
    DROP deletes."""
    # No trigger sees these rows go with the DROP: room_stats rebuilds on its
    # next refresh (migration 0023).
    session.execute(text("SELECT room_stats_rollup_invalidate()"))
    return int(
        session.execute(
            compose(
                "WITH removed AS (SELECT * FROM {partition}), {counters}"
                " SELECT count(*) FROM removed",
                partition=sql.Identifier(name),
                counters=sql.SQL(REMOVED_MESSAGE_COUNTERS),
            )
        ).scalar_one()
    )


# ---------------------------------------------------------------- archive

ARCHIVE_TABLES = (
    "archived_messages",
    "archived_reactions",
    "archived_files",
    "archived_reply_links",
)


def purge_archive(run: Run) -> None:
    """Archived rows past ARCHIVE_RETENTION_DAYS are gone for good."""
    for table in ARCHIVE_TABLES:
        apply_in_batches(
            run,
            f"{table}_purged",
            table,
            "archived_at < now() - make_interval(days => :days)",
            {"days": get_settings().archive_retention_days},
        )


# ---------------------------------------------------------------- restore


def restore(room_id: int, start: datetime, end: datetime) -> dict[str, int]:
    """Put a room's archived messages from [start, end) back, with their
    reactions and files, re-attaching replies that outlived them. Creates
    the months' partitions if they were dropped. One batch per transaction,
    oldest first, so that parents come back before their replies; a killed
    restore resumes where it stopped.

    Restored messages older than the room's retention are purged (and
    archived) again by the next purge: raise the retention first."""
    ensure_partitions_for(room_id, start, end)
    counts = {"messages": 0, "reactions": 0, "files": 0, "replies_reattached": 0}
    for size in timed_batches():
        # Partitions made above can be dropped meanwhile (a purge of a
        # covered month): a batch that meets a missing month makes it.
        restored = creating_missing_partitions(
            partial(restore_next_batch, room_id, start, end, size)
        )
        if restored is None:
            return counts
        for key, value in restored.items():
            counts[key] += value
    return counts


def restore_next_batch(
    room_id: int, start: datetime, end: datetime, size: int
) -> dict[str, int] | None:
    """Restore the oldest `size` archived messages of the range, in one
    transaction; None when none are left. No keyset (KeysetBatches): a
    restored batch leaves the archive, so the oldest left is the next one,
    and a batch that meets a dropped month is retried whole."""
    with session_scope() as session:
        batch = [
            tuple(row)
            for row in session.execute(
                text(
                    "SELECT id, created_at FROM archived_messages"
                    " WHERE room_id = :room AND created_at >= :start AND created_at < :end"
                    " ORDER BY created_at, id LIMIT :size"
                ),
                {"room": room_id, "start": start, "end": end, "size": size},
            )
        ]
        return restore_batch(session, batch) if batch else None


def ensure_partitions_for(room_id: int, start: datetime, end: datetime) -> None:
    with session_scope() as session:
        first, last = session.execute(
            text(
                "SELECT min(created_at), max(created_at) FROM archived_messages"
                " WHERE room_id = :room AND created_at >= :start AND created_at < :end"
            ),
            {"room": room_id, "start": start, "end": end},
        ).one()
        if first is None:
            return
        # Months are UTC months (db/partitions.py), whatever the session's zone.
        first_month = month_of(first)
        months = months_between(first_month, month_of(last)) + 1
        create_monthly_partitions(session.connection(), "messages", first_month, months)


def restore_batch(session: Session, batch: Batch) -> dict[str, int]:
    params = batch_params(batch)
    # thread_count starts at 0: the insert trigger counts each reply that
    # comes back (or is re-attached) into its parent. A parent that is not
    # there (still archived outside the range, or gone) leaves the reply
    # top-level.
    restored_columns = {
        "thread_count": sql.SQL("0"),
        "is_thread_root": sql.SQL("false"),
        "parent_message_id": sql.SQL("CASE WHEN p.ok THEN a.parent_message_id END"),
        "parent_created_at": sql.SQL("CASE WHEN p.ok THEN a.parent_created_at END"),
    }
    values = sql.SQL(", ").join(
        restored_columns.get(name, sql.Identifier("a", name)) for name in MESSAGE_COLUMNS
    )
    # A reply whose parent is still archived comes back top-level; its link
    # is kept so that restoring the parent later re-attaches it.
    session.execute(
        over_batch(
            "WITH {batch} INSERT INTO archived_reply_links"
            " (message_id, message_created_at, parent_message_id, parent_created_at)"
            " SELECT a.id, a.created_at, a.parent_message_id, a.parent_created_at"
            " FROM archived_messages a JOIN d ON a.id = d.id AND a.created_at = d.created_at"
            " WHERE a.parent_message_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM messages x"
            "  WHERE x.id = a.parent_message_id AND x.created_at = a.parent_created_at)"
            " AND NOT EXISTS (SELECT 1 FROM d y"
            "  WHERE y.id = a.parent_message_id AND y.created_at = a.parent_created_at)"
            " ON CONFLICT DO NOTHING"
        ),
        params,
    )
    messages = affected(
        session.execute(
            over_batch(
                "WITH {batch} INSERT INTO messages ({columns})"
                " SELECT {values} FROM archived_messages a"
                " JOIN d ON a.id = d.id AND a.created_at = d.created_at"
                " CROSS JOIN LATERAL (SELECT a.parent_message_id IS NOT NULL AND ("
                "  EXISTS (SELECT 1 FROM messages x"
                "   WHERE x.id = a.parent_message_id AND x.created_at = a.parent_created_at)"
                "  OR EXISTS (SELECT 1 FROM d y"
                "   WHERE y.id = a.parent_message_id AND y.created_at = a.parent_created_at)"
                " ) AS ok) p"
                " ORDER BY a.created_at, a.id ON CONFLICT DO NOTHING",
                columns=identifiers(MESSAGE_COLUMNS),
                values=values,
            ),
            params,
        )
    )
    counts = {"messages": messages}
    for live, archive, names in (
        ("reactions", "archived_reactions", REACTION_COLUMNS),
        ("files", "archived_files", FILE_COLUMNS),
    ):
        tables = {"live": sql.Identifier(live), "archive": sql.Identifier(archive)}
        counts[live] = affected(
            session.execute(
                over_batch(
                    "WITH {batch} INSERT INTO {live} ({columns})"
                    " SELECT {values} FROM {archive} a"
                    " JOIN d ON a.message_id = d.id AND a.message_created_at = d.created_at"
                    " ON CONFLICT DO NOTHING",
                    columns=identifiers(names),
                    values=identifiers(names, "a"),
                    **tables,
                ),
                params,
            )
        )
        session.execute(
            over_batch(
                "WITH {batch} DELETE FROM {archive} a USING d"
                " WHERE a.message_id = d.id AND a.message_created_at = d.created_at",
                **tables,
            ),
            params,
        )
    counts["replies_reattached"] = reattach_replies(session, params)
    recount_member_counters(session, batch_authors(session, params))
    session.execute(
        over_batch(
            "WITH {batch} DELETE FROM archived_messages a USING d"
            " WHERE a.id = d.id AND a.created_at = d.created_at"
        ),
        params,
    )
    return counts


def reattach_replies(session: Session, params: dict[str, Any]) -> int:
    """Links whose two ends are live again (one of them in this batch):
    re-attach the reply, and count it into its parent's thread_count by
    hand (the counter trigger does not watch the parent columns)."""
    reattached = session.execute(
        over_batch(
            "WITH {batch}, links AS ("
            " SELECT l.* FROM archived_reply_links l JOIN d"
            "  ON (l.message_id = d.id AND l.message_created_at = d.created_at)"
            "  OR (l.parent_message_id = d.id AND l.parent_created_at = d.created_at))"
            " UPDATE messages c SET parent_message_id = l.parent_message_id,"
            "  parent_created_at = l.parent_created_at"
            " FROM links l WHERE c.id = l.message_id AND c.created_at = l.message_created_at"
            "  AND c.parent_message_id IS NULL AND EXISTS (SELECT 1 FROM messages p"
            "   WHERE p.id = l.parent_message_id AND p.created_at = l.parent_created_at)"
            " RETURNING c.id, c.created_at, c.parent_message_id, c.parent_created_at, c.is_deleted"
        ),
        params,
    ).all()
    if not reattached:
        return 0
    live = [row for row in reattached if not row.is_deleted]
    session.execute(
        text(
            "UPDATE messages p SET thread_count = p.thread_count + x.n,"
            " is_thread_root = p.thread_count + x.n > 0"
            " FROM (SELECT id, created_at, count(*) AS n"
            "  FROM unnest(CAST(:ids AS integer[]), CAST(:ts AS timestamptz[]))"
            "  AS u(id, created_at)"
            "  GROUP BY id, created_at) x"
            " WHERE p.id = x.id AND p.created_at = x.created_at"
        ),
        {"ids": [r.parent_message_id for r in live], "ts": [r.parent_created_at for r in live]},
    )
    session.execute(
        text(
            "DELETE FROM archived_reply_links l"
            " USING unnest(CAST(:ids AS integer[]), CAST(:ts AS timestamptz[]))"
            " AS u(id, created_at)"
            " WHERE l.message_id = u.id AND l.message_created_at = u.created_at"
        ),
        {"ids": [r.id for r in reattached], "ts": [r.created_at for r in reattached]},
    )
    return len(reattached)
