"""maintenance.scrub_deleted_content: the content of a message deleted more
than DELETED_CONTENT_GRACE_DAYS ago, gone for good.

Deleting a message (api/messages.py) only hides it (`is_deleted`): the
text stays for a while so that a moderator can still look into a report or
an abuse complaint. After the grace, it is replaced by a tombstone
(`TOMBSTONE`; `content` cannot be blank), and so is everything derived
from it: `raw_content`, `rendered_html`, the search vector and its
configuration, the links enrichment found (`referenced_message_ids`) and
enrichment's keys of `metadata` (DERIVED_METADATA); `content_type` becomes
`text`. The row itself stays: replies, reactions, read markers and
counters still point at it, and the triggers that keep counters change
nothing (`is_deleted` is not written). What it does not touch: `mentions`
(user ids, not text: the mention rows and notifications derived from them
stay as they were), the client's `metadata.client`/`version`,
`ip_address` and `user_agent`.

- Scrubbed is a state of the row, no extra column: the tombstone as
  content and no `raw_content` (the API always writes one), so a scrubbed
  row is not picked again, and one restored from the archive with its text
  is.
- Messages in batches (`apply_in_batches`, by their key (id, created_at):
  a ctid is only unique within one partition), a transaction each, rows
  locked FOR UPDATE SKIP LOCKED, never waited for. `deleted_at` is never
  before `created_at`, so `created_at` below the cut-off is said too: it
  lets PostgreSQL skip the recent monthly partitions.
- The archive (`archived_messages`, purge_retention's) holds deleted
  messages too, restorable for ARCHIVE_RETENTION_DAYS: their content is
  scrubbed by the same rule, so a restore cannot bring back text the
  live table has lost.

Counts: `messages_scrubbed`, `archived_messages_scrubbed` (a dry run counts
them). There is no index on deleted messages: each run reads the messages
older than the grace once, as backfill_enrichment reads them all, so it
runs daily.
"""

from __future__ import annotations

from veza.maintenance.batched import apply_in_batches
from veza.maintenance.run import Run
from veza.messages.enrichment import DERIVED_METADATA
from veza.settings import get_settings

TOMBSTONE = "[deleted]"

CUT_OFF = "now() - make_interval(days => :grace_days)"
DUE = (
    f"is_deleted AND deleted_at < {CUT_OFF} AND created_at < {CUT_OFF}"
    " AND (content <> :tombstone OR raw_content IS NOT NULL)"
)
SCRUB = (
    "content = :tombstone, content_type = 'text', raw_content = NULL, rendered_html = NULL,"
    " search_config = NULL, search_vector = NULL, referenced_message_ids = '{}',"
    " metadata = metadata - CAST(:derived AS text[])"
)
# Where deleted messages are, and what each one's scrubbed rows count as.
TABLES = {"messages": "messages_scrubbed", "archived_messages": "archived_messages_scrubbed"}
KEY = ("id", "created_at")


def scrub_deleted(run: Run) -> None:
    """Every message deleted more than the grace ago and not scrubbed yet,
    live and archived, scrubbed in batches."""
    params = {
        "grace_days": get_settings().deleted_content_grace_days,
        "tombstone": TOMBSTONE,
        "derived": list(DERIVED_METADATA),
    }
    for table, count_key in TABLES.items():
        apply_in_batches(run, count_key, table, DUE, params, set_clause=SCRUB, row_id=KEY)
