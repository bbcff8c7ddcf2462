"""maintenance.backfill_enrichment: the enrichment of every live message
messages.index never gave one, so that search can find it.

messages.index enriches a message after each post and edit (rendering,
language, code snippets, links, and the search vector: enrichment.py). A
message written before migration 0014 has none of it, one enriched before
0015 has no search vector, and one whose outbox row was given up
on (OUTBOX_MAX_REDRIVES) never got either: search cannot find them. This
pass gives each the enrichment messages.index would have, through the same
code (`enrich`), so the two cannot drift apart.

- Pending means live and missing any of it: `enriched_at` or
  `search_vector` NULL (a message enrich() wrote has both).
- Newest first, by (id, created_at), the primary key, walked backwards
  through each partition's index: search ranks the newest matches (in id
  order, veza/messages/search.py), and people look for recent messages,
  so a run cut short by its budget, or cancelled, has made the messages
  most likely to be looked for findable, and leaves the oldest to the next
  run.
- A batch per transaction: its rows are locked FOR NO KEY UPDATE SKIP
  LOCKED in the statement that reads them, so what is enriched is the
  content as it is now and no edit can slip in before the write; a row a
  chat write holds is skipped rather than waited for (an edit owes a
  messages.index of its own; a pin or a flag leaves it to the next run);
  NO KEY, so a reaction's or a reply's foreign-key check on the message
  never waits on the batch. A messages.index of the same message waits for
  the batch, then writes the same enrichment again: both are a function
  of the content, so running twice is harmless, and a message already
  enriched is not picked again (idempotent).
- Cost when nothing is pending: the count the progress starts with and a
  first batch that finds nothing each read the whole table (there is no
  index on `enriched_at`): 0.1 s and 0.2 s for 1M short messages on a test
  machine. A backlog is reached after the enriched messages newer than it,
  in the first batch; enrich() itself takes ~0.1 ms a message. Batches are
  timed (Run.batches) and the pass is one phase with the run's budget
  (MAINTENANCE_RUN_BUDGET_SECONDS); what it leaves, the next run resumes.

Counts: `messages_enriched` (a dry run counts the pending messages, reads
no content and locks nothing).
"""

from __future__ import annotations

from psycopg import sql
from sqlalchemy import text

from db.engine import session_scope
from veza.maintenance.batched import KeysetBatches
from veza.maintenance.run import Run
from veza.messages.enrichment import COLUMNS, enrich

PENDING = "NOT is_deleted AND (enriched_at IS NULL OR search_vector IS NULL)"
KEY = ("id", "created_at")


def backfill(run: Run) -> None:
    """Every pending message, newest first, a batch per transaction."""
    with run.phase("enrichment", left=1):
        with session_scope() as session:
            pending: int = session.execute(
                text(f"SELECT count(*) FROM messages WHERE {PENDING}")
            ).scalar_one()
        if run.dry_run:
            run.add(messages_enriched=pending)
            return
        run.add(messages_enriched=0)  # reported even when nothing was pending
        run.expect(pending, of="messages_enriched")
        batches = KeysetBatches(
            run,
            "SELECT {columns} FROM messages WHERE {pending} AND {after}"
            " ORDER BY {key} LIMIT :size FOR NO KEY UPDATE SKIP LOCKED",
            key=KEY,
            descending=True,
            columns=sql.SQL(COLUMNS),
            pending=sql.SQL(PENDING),
        )
        for session, rows in batches:
            run.add(messages_enriched=enrich(session, [row._mapping for row in rows]))
