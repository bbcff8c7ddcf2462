"""Outbox pruning: a published row is kept OUTBOX_RETENTION_DAYS for
looking into what was sent, then deleted. Unsent rows are never pruned."""

from __future__ import annotations

from worker.maintenance.batched import apply_in_batches
from worker.maintenance.config import maintenance_settings
from worker.maintenance.run import Run


def prune_sent(run: Run) -> None:
    apply_in_batches(run, "outbox_pruned", "outbox",
                     "sent_at < now() - make_interval(days => :days)",
                     {"days": maintenance_settings.outbox_retention_days})
