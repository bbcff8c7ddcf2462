"""files.expires_at, set by policy, so that the expiry purge
(sweeps.purge_expired) has work: nothing else sets it.

The policy, one SQL expression (`POLICY`) per file:

- an upload attached to no message (`message_id IS NULL`; the API attaches
  a file when it is uploaded, never later, so such an upload stays
  unattached) expires UNATTACHED_FILE_TTL_HOURS after its upload, or at its
  room's retention if that comes first;
- an attachment in a room with retention expires when the last copy of it
  may go: its message's retention plus the archive window
  (ARCHIVE_RETENTION_DAYS). purge_retention archives the message with its
  file rows when the retention passes, and the archive keeps them
  restorable for the window; an earlier expiry would let the hourly
  expiry purge delete file rows the daily retention purge is about to
  archive, and a restore would come back without them. For such a file the
  expiry is a statement of when it goes, and a net under the retention
  purge;
- any other file (an attachment in a room that keeps everything) does not
  expire: its expiry is cleared, so that raising a room's retention to
  "keep" takes effect.

The policy owns the expiries it wrote, and the files with none: it records
what it wrote in `metadata.expiry_by_policy` (the expiry's epoch seconds),
and an expiry that is no longer that value was set otherwise (an operator
expiring a file now, an erasure) and is left as it is. An owned file is
written where its expiry differs from the policy's (a new file, a changed
room retention or setting), so a run over an unchanged table writes
nothing. A file still in the pipeline (processing,
or a scan pending or running) is left until it is done: its steps rewrite
its metadata and would find their row gone mid-way (a stuck file is failed
by requeue_stale_files after MAX_FILE_ATTEMPTS, then gets its expiry).
An expiry is never moved into the past, where the next purge would act on
it at once, except the first one of an unattached upload, which is what
its TTL means (the first run after upgrading removes the old ones). So a
shortened retention brings an attachment's expiry forward only while it is
still ahead: the retention purge archives the rest.
"""

from __future__ import annotations

from veza.maintenance.batched import apply_in_batches
from veza.maintenance.run import Run
from veza.settings import get_settings

# The room's retention as an interval; NULL for a room that keeps everything.
RETENTION = (
    "make_interval(days => (SELECT NULLIF(r.message_retention_days, 0)"
    " FROM rooms r WHERE r.id = files.room_id))"
)
POLICY = (
    "(CASE WHEN files.message_id IS NULL"
    f" THEN LEAST(files.created_at + make_interval(hours => :ttl_hours),"
    f" files.created_at + {RETENTION})"
    f" ELSE files.message_created_at + {RETENTION} + make_interval(days => :archive_days)"
    " END)"
)
IN_PIPELINE = (
    "(files.processing_status IN ('pending', 'processing')"
    " OR files.virus_scan_status IN ('pending', 'scanning'))"
)
MARK = "expiry_by_policy"
# Owned, done with the pipeline, differing from the policy, and able to take
# it: clearing or a future time always, a past time only as an unattached
# upload's first expiry.
DUE = (
    f"NOT {IN_PIPELINE}"
    f" AND (files.expires_at IS NULL"
    f"  OR files.metadata -> '{MARK}' = to_jsonb(extract(epoch FROM files.expires_at)))"
    f" AND files.expires_at IS DISTINCT FROM {POLICY}"
    f" AND ({POLICY} IS NULL OR {POLICY} > now()"
    "  OR (files.expires_at IS NULL AND files.message_id IS NULL))"
)
WRITE = (
    f"expires_at = {POLICY},"
    f" metadata = metadata || jsonb_build_object('{MARK}', extract(epoch FROM {POLICY}))"
)


def set_expiry_by_policy(run: Run) -> None:
    """Every file whose expiry the policy changes, in batches (SKIP LOCKED:
    a file a pipeline step holds is done by the next run), marked as the
    policy's. Counted as `expiry_set`."""
    settings = get_settings()
    apply_in_batches(
        run,
        "expiry_set",
        "files",
        DUE,
        {
            "ttl_hours": settings.unattached_file_ttl_hours,
            "archive_days": settings.archive_retention_days,
        },
        set_clause=WRITE,
    )
