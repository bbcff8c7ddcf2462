"""The outbox's owed work: re-driven until it finishes, then pruned.

Re-drive. A row sent OUTBOX_REDRIVE_AFTER_SECONDS ago whose work never
finished (Redis lost the message: a restart without persistence, an
eviction; or a task failed for good) is made unsent again, and the relay
publishes it under the same task id: tasks are idempotent. The reconciler
never talks to Redis itself: the relay's claim, publish and mark is the one
way anything is published. Each re-drive waits twice as long as the one
before (600 s, 1200 s, ... after the last send), so a row that is merely
slow (a backlog behind workers that were down for hours) is copied a few
times, not every run. After OUTBOX_MAX_REDRIVES the row is recorded dead,
with the last error its tasks met; `veza outbox replay` brings it back.

Prune. A row whose work finished is kept OUTBOX_RETENTION_DAYS for looking
into what was done, then deleted. Unfinished rows, dead ones included, are
never pruned.
"""

from __future__ import annotations

from sqlalchemy import text

from db.engine import session_scope
from veza.maintenance.batched import apply_in_batches
from veza.maintenance.run import Run
from veza.outbox import NOTIFY_CHANNEL
from veza.settings import get_settings

# Sent, unfinished, alive, and due: the plain bound lets the partial index
# idx_outbox_unfinished find the candidates, the doubling one decides.
DUE = (
    "finished_at IS NULL AND dead_at IS NULL"
    " AND sent_at < now() - make_interval(secs => :after)"
    " AND sent_at < now() - make_interval(secs => :after * power(2, redrives))"
)


def redrive(run: Run) -> None:
    params = {
        "after": get_settings().outbox_redrive_after_seconds,
        "max": get_settings().outbox_max_redrives,
    }
    apply_in_batches(
        run,
        "outbox_dead",
        "outbox",
        f"{DUE} AND redrives >= :max",
        params,
        set_clause="dead_at = now(), dead_reason = 'never finished after ' || redrives"
        " || ' re-drives; last error: ' || COALESCE(last_error, 'none recorded')",
    )
    apply_in_batches(
        run,
        "outbox_redriven",
        "outbox",
        f"{DUE} AND redrives < :max",
        params,
        set_clause="sent_at = NULL, started_at = NULL, claimed_until = NULL,"
        " redrives = redrives + 1",
    )
    if run.counts["outbox_redriven"] and not run.dry_run:
        with session_scope() as session:  # wake the relay now, not at its next poll
            session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


def prune_finished(run: Run) -> None:
    apply_in_batches(
        run,
        "outbox_pruned",
        "outbox",
        "finished_at < now() - make_interval(days => :days)",
        {"days": get_settings().outbox_retention_days},
    )
