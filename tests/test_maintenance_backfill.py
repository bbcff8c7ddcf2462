"""maintenance.backfill_enrichment: messages written before enrichment and
search (migrations 0014, 0015), or whose messages.index never came, are
enriched as the task would have, and search finds them."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import psycopg

from db.engine import libpq_url
from db.partitions import add_months, this_month
from tests.factories import make_room, make_user, scalar
from tests.maintenance_helpers import run_task, runs
from tests.test_api_enrichment import SEED_EXAMPLE, fetched
from tests.test_api_search import found

BACKFILL = "maintenance.backfill_enrichment"
# Several batches (the first is 500 rows), across two monthly partitions.
FILLERS = 1200


def at_noon_mid_last_month() -> datetime:
    """The 15th of last UTC month at noon UTC: inside a partition the `mdb`
    fixture made, on any day (the 1st of a month, 31 December) and in any
    session TimeZone (an instant, not a local time)."""
    return datetime.combine(add_months(this_month(), -1) + timedelta(days=14), time(12), UTC)


def old_message(db, room: int, author: int, content: str, at: datetime, **columns) -> int:
    """A message as a row written before migration 0014: no enrichment, no
    search vector (NULL unless `columns` says otherwise)."""
    names = ", ".join(["room_id", "author_id", "content", "created_at", *columns])
    marks = ", ".join(["%s"] * (4 + len(columns)))
    return db.execute(
        f"INSERT INTO messages ({names}) VALUES ({marks}) RETURNING id",
        (room, author, content, at, *columns.values()),
    ).fetchone()[0]


def history(db, room: int, author: int, noon: datetime) -> None:
    """FILLERS messages from before migration 0014, a minute apart back from
    noon, the last 100 some 40 days earlier (the month before)."""
    db.execute(
        "INSERT INTO messages (room_id, author_id, content, created_at)"
        " SELECT %s, %s, 'note ' || g,"
        "  %s - g * interval '1 minute' - CASE WHEN g > %s THEN interval '40 days' ELSE interval '0' END"
        " FROM generate_series(1, %s) g",
        (room, author, noon, FILLERS - 100, FILLERS),
    )


def test_messages_from_before_enrichment_are_enriched_and_found(api, mdb):
    db = mdb
    # The test's own session in a far zone: the rows' instants do not move.
    db.execute("SET TimeZone = 'Pacific/Kiritimati'")
    alice, bob = api.register(), api.register()
    room = api.room(alice)
    api.join(room, bob)
    noon = at_noon_mid_last_month()
    history(db, api.room(alice, name="history"), alice.id, noon)
    # Enriched before migration 0015 existed: no search vector yet.
    english = old_message(
        db,
        room,
        alice.id,
        "The runners were running through the park this morning.",
        noon - timedelta(hours=3),
        enriched_at=noon,
        rendered_html="<p>stale</p>",
    )
    # Enriched and searchable already: left alone.
    done = old_message(
        db,
        room,
        alice.id,
        "Running late again, as every morning.",
        noon - timedelta(hours=2),
        enriched_at=noon,
        rendered_html="<p>as messages.index left it</p>",
        search_config="english",
    )
    db.execute(
        "UPDATE messages SET search_vector = to_tsvector('english', content) WHERE id = %s",
        (done,),
    )
    deleted = old_message(
        db, room, alice.id, "Je cherchais autre chose.", noon - timedelta(hours=1), is_deleted=True
    )
    french = old_message(db, room, alice.id, SEED_EXAMPLE.format(name=bob.username), noon)
    pending = FILLERS + 2

    def unenriched() -> int:
        return scalar(db, "SELECT count(*) FROM messages WHERE search_vector IS NULL")

    assert found(api, bob, "q=chercher") == []
    assert unenriched() == pending + 1  # the deleted one too

    dry = run_task(BACKFILL, dry_run=True)
    assert (dry["status"], dry["counts"]) == ("dry_run", {"messages_enriched": pending})
    assert unenriched() == pending + 1
    assert found(api, bob, "q=chercher") == []

    result = run_task(BACKFILL)
    assert (result["status"], result["counts"]) == ("succeeded", {"messages_enriched": pending})
    # Searchable, stemmed in French: "chercher" finds "cherchais".
    assert found(api, bob, "q=chercher") == [french]
    assert set(found(api, bob, "q=run")) == {english, done}
    message = fetched(api, bob, {"id": french, "room_id": room})
    assert message["enrichment"] == "done"
    assert message["metadata"]["language_detected"] == "fr"
    assert message["metadata"]["code_snippets"] == ["rust"]
    assert "<pre><code>fn hello()" in message["rendered_html"]
    assert fetched(api, bob, {"id": english, "room_id": room})["rendered_html"] == (
        "<p>The runners were running through the park this morning.</p>\n"
    )
    assert fetched(api, bob, {"id": done, "room_id": room})["rendered_html"] == (
        "<p>as messages.index left it</p>"
    )
    assert unenriched() == 1
    assert scalar(db, "SELECT enriched_at FROM messages WHERE id = %s", (deleted,)) is None
    assert (
        scalar(
            db,
            "SELECT count(*) FROM messages WHERE content LIKE 'note %%' AND enriched_at IS NOT NULL"
            " AND metadata ? 'language_detected'",
        )
        == FILLERS
    )
    # The run said how far along it was: all of what it expected.
    progress = scalar(
        db,
        "SELECT progress FROM maintenance_runs WHERE id = %s",
        (result["run_id"],),
    )
    assert (progress["done"], progress["total"]) == (pending, pending)

    again = run_task(BACKFILL)
    assert again["counts"] == {"messages_enriched": 0}
    assert [(status, dry_run) for status, dry_run, _ in runs(db, BACKFILL)] == [
        ("dry_run", True),
        ("succeeded", False),
        ("succeeded", False),
    ]


def test_newest_first_within_the_budget_and_a_row_held_by_a_writer_is_skipped(mdb, environment):
    db = mdb
    author = make_user(db)
    room = make_room(db, author)
    history(db, room, author, at_noon_mid_last_month())
    newest_first = [
        row[0] for row in db.execute("SELECT id FROM messages ORDER BY id DESC, created_at DESC")
    ]

    def enriched() -> set[int]:
        return {
            row[0] for row in db.execute("SELECT id FROM messages WHERE enriched_at IS NOT NULL")
        }

    # No time at all: one batch (the first is 500 rows), the newest.
    environment(MAINTENANCE_RUN_BUDGET_SECONDS="0")
    cut = run_task(BACKFILL)
    assert cut["counts"] == {"messages_enriched": 500, "enrichment_out_of_time": 1}
    assert enriched() == set(newest_first[:500])

    # A chat write holds one of the rest: the run goes on without it.
    environment(MAINTENANCE_RUN_BUDGET_SECONDS=None)
    held = newest_first[700]
    with psycopg.connect(libpq_url()) as writer:
        writer.execute("SELECT 1 FROM messages WHERE id = %s FOR UPDATE", (held,))
        rest = run_task(BACKFILL)
    assert rest["counts"] == {"messages_enriched": FILLERS - 501}
    assert enriched() == set(newest_first) - {held}

    # The next run takes it (what messages.index for its edit would have done).
    assert run_task(BACKFILL)["counts"] == {"messages_enriched": 1}
    assert enriched() == set(newest_first)
