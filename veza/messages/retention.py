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

Counters (rooms.message_count, parents' thread_count) are kept by the
message triggers on row deletes; when a whole monthly partition is dropped
instead, the triggers do not fire and the counters are fixed in the DROP's
transaction. room_members.message_count and DM unread_count have no trigger:
messages.index keeps them by recount, so each batch (purge, drop, restore)
runs the same recounts for the (room or conversation, author) pairs it
touched, in its own transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime
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
from veza.messages.counters import RECOUNT_DM_UNREAD, RECOUNT_ROOM_MEMBER
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


AUTHOR_PAIRS = sql.SQL("SELECT DISTINCT m.room_id, m.conversation_id, m.author_id")


def batch_authors(session: Session, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The distinct (room or conversation, author) pairs of a batch."""
    return [
        dict(row)
        for row in session.execute(
            over_batch(
                "WITH {batch} {pairs}"
                " FROM messages m JOIN d ON m.id = d.id AND m.created_at = d.created_at",
                pairs=AUTHOR_PAIRS,
            ),
            params,
        ).mappings()
    ]


def partition_authors(session: Session, name: str) -> list[dict[str, Any]]:
    """The distinct (room or conversation, author) pairs of a partition."""
    return [
        dict(row)
        for row in session.execute(
            compose(
                "{pairs} FROM {partition} m",
                pairs=AUTHOR_PAIRS,
                partition=sql.Identifier(name),
            )
        ).mappings()
    ]


def recount_member_counters(session: Session, authors: list[dict[str, Any]]) -> None:
    """messages.index's recounts, for every pair a batch touched: a room
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
    doomed = with_old_replies(session, batch, cutoff)
    params = {**batch_params(doomed), "cutoff": cutoff}
    detached = detach_replies(session, params, "c.created_at >= :cutoff")
    archived = archive_rows(session, params)
    authors = batch_authors(session, params)
    deleted = affected(
        session.execute(
            over_batch(
                "WITH {batch} DELETE FROM messages m USING d"
                " WHERE m.id = d.id AND m.created_at = d.created_at"
            ),
            params,
        )
    )
    recount_member_counters(session, authors)
    run.add(messages_deleted=deleted, replies_detached=detached, **archived)


def detach_replies(session: Session, params: dict[str, Any], which: str) -> int:
    """Keep replies that must outlive their parent: record the link, then
    detach them (an UPDATE of the parent columns fires no counter trigger;
    the parent is about to go, so its thread_count goes with it). `which`:
    the SQL condition on the reply `c` that picks them."""
    session.execute(
        over_batch(
            "WITH {batch} INSERT INTO archived_reply_links"
            " (message_id, message_created_at, parent_message_id, parent_created_at)"
            " SELECT c.id, c.created_at, c.parent_message_id, c.parent_created_at"
            " FROM messages c"
            " JOIN d ON c.parent_message_id = d.id AND c.parent_created_at = d.created_at"
            " WHERE {which} ON CONFLICT DO NOTHING",
            which=sql.SQL(which),
        ),
        params,
    )
    return affected(
        session.execute(
            over_batch(
                "WITH {batch} UPDATE messages c"
                " SET parent_message_id = NULL, parent_created_at = NULL"
                " FROM d WHERE c.parent_message_id = d.id AND c.parent_created_at = d.created_at"
                " AND {which}",
                which=sql.SQL(which),
            ),
            params,
        )
    )


def archive_rows(session: Session, params: dict[str, Any]) -> dict[str, int]:
    """Copy the batch's messages, reactions and file rows to the archive.
    ON CONFLICT: a message archived, restored and purged again."""
    copies = {
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
    counts = {}
    for archive, (live, names, join) in copies.items():
        counts[archive] = affected(
            session.execute(
                over_batch(
                    "WITH {batch} INSERT INTO {archive} ({columns})"
                    " SELECT {values} FROM {live} x JOIN d ON {join} ON CONFLICT DO NOTHING",
                    archive=sql.Identifier(archive),
                    columns=identifiers(names),
                    values=identifiers(names, "x"),
                    live=sql.Identifier(live),
                    join=sql.SQL(join),
                ),
                params,
            )
        )
    return counts


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

# A row of the partition still to unlink: not archived yet, or referenced
# (by a row of MESSAGE_REFERENCES, or a reply) since. Rows an earlier,
# stopped run unlinked fail this test, so a run resumes where the last one
# stopped; a reaction added to an unlinked row meanwhile is caught all the same.
STILL_LINKED = sql.SQL(" OR ").join(
    [
        sql.SQL(
            "NOT EXISTS (SELECT 1 FROM archived_messages a"
            "  WHERE a.id = m.id AND a.created_at = m.created_at)"
        ),
        *(
            sql.SQL(
                "EXISTS (SELECT 1 FROM {referencing} x"
                "  WHERE x.message_id = m.id AND x.message_created_at = m.created_at)"
            ).format(referencing=sql.Identifier(referencing))
            for referencing in MESSAGE_REFERENCES
        ),
        sql.SQL(
            "EXISTS (SELECT 1 FROM messages x"
            "  WHERE x.parent_message_id = m.id AND x.parent_created_at = m.created_at)"
        ),
    ]
)


def unlink_partition(run: Run, partition: partition_upkeep.Partition) -> bool:
    """Archive the partition's rows and remove every reference to them, a
    batch per transaction; True when nothing is left to unlink, False when
    the phase ran out of time first."""
    batches = KeysetBatches(
        run,
        (
            "SELECT id, created_at FROM {partition} m"
            " WHERE {after} AND ({still_linked} OR CAST(:dry_run AS boolean))"
            " ORDER BY {key} LIMIT :size"
        ),
        {"dry_run": run.dry_run},
        key=MESSAGE_KEY,
        partition=sql.Identifier(partition.name),
        still_linked=STILL_LINKED,
    )
    for session, rows in batches:
        if run.dry_run:
            run.add(messages_deleted=len(rows))
            continue
        params = batch_params([tuple(row) for row in rows])
        # Every reply goes, even one inside the partition: the detach
        # refuses while any row references the partition, its own
        # included. The links bring the threads back on restore.
        detached = detach_replies(session, params, "true")
        archived = archive_rows(session, params)
        for referencing in MESSAGE_REFERENCES:
            session.execute(
                over_batch(
                    "WITH {batch} DELETE FROM {referencing} x USING d"
                    " WHERE x.message_id = d.id AND x.message_created_at = d.created_at",
                    referencing=sql.Identifier(referencing),
                ),
                params,
            )
        run.add(replies_detached=detached, **archived)
    return batches.exhausted


def finish_message_partition_drop(run: Run, partition: partition_upkeep.Partition) -> None:
    run.add(
        messages_deleted=partition_upkeep.drop("messages", partition, before_drop=subtract_counters)
    )


def subtract_counters(session: Session, name: str) -> int:
    """The detached partition's live messages leave their room's (or
    conversation's) message_count and their parent's thread_count; returns
    how many rows the DROP deletes."""
    partition = sql.Identifier(name)
    session.execute(
        compose(
            "UPDATE rooms r SET message_count = r.message_count - d.n"
            " FROM (SELECT room_id, count(*) AS n FROM {partition}"
            "  WHERE NOT is_deleted AND room_id IS NOT NULL GROUP BY room_id) d"
            " WHERE r.id = d.room_id",
            partition=partition,
        )
    )
    session.execute(
        compose(
            "UPDATE direct_conversations c SET message_count = c.message_count - d.n"
            " FROM (SELECT conversation_id, count(*) AS n FROM {partition}"
            "  WHERE NOT is_deleted AND conversation_id IS NOT NULL GROUP BY conversation_id) d"
            " WHERE c.id = d.conversation_id",
            partition=partition,
        )
    )
    session.execute(
        compose(
            "UPDATE messages p SET thread_count = p.thread_count - d.n,"
            " is_thread_root = p.thread_count - d.n > 0"
            " FROM (SELECT parent_message_id, parent_created_at, count(*) AS n"
            "  FROM {partition} WHERE NOT is_deleted AND parent_message_id IS NOT NULL"
            "  GROUP BY parent_message_id, parent_created_at) d"
            " WHERE p.id = d.parent_message_id AND p.created_at = d.parent_created_at",
            partition=partition,
        )
    )
    # Detached already: its rows no longer count in `messages`.
    recount_member_counters(session, partition_authors(session, name))
    # No trigger saw these rows go: room_stats rebuilds on its next refresh
    # (migration 0023).
    session.execute(text("SELECT room_stats_rollup_invalidate()"))
    return int(
        session.execute(
            compose("SELECT count(*) FROM {partition}", partition=partition)
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
