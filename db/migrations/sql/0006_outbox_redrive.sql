-- Owed work is done, eventually (docs/schema.md, "0006"; docs/operations.md,
-- "Owed work"). The outbox row records when its work finished; the relay
-- claims rows with a lease instead of holding row locks while it publishes;
-- the reconciler re-drives rows that were sent and never finished, and rows
-- it gives up on, like poison messages, are kept dead with their reason.

ALTER TABLE outbox
    ADD COLUMN finished_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN claimed_until TIMESTAMP WITH TIME ZONE,
    ADD COLUMN redrives INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN dead_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN dead_reason TEXT;

-- Rows published before this migration: the old code stamped a start but
-- never a finish. A started row is taken as finished when it started:
-- re-driving a week of history at upgrade would flood the workers. A row
-- sent and never started is the lost message the reconciler exists for,
-- so it stays unfinished and is re-driven.
UPDATE outbox SET finished_at = started_at WHERE started_at IS NOT NULL;

-- Unfinished rows (unsent, in flight, dead) are few; the reconciler and
-- `veza outbox` read only these.
CREATE INDEX idx_outbox_unfinished ON outbox(sent_at) WHERE finished_at IS NULL;

-- Pruning goes by finished_at now: a row whose work never finished is kept.
DROP INDEX idx_outbox_sent_at;
CREATE INDEX idx_outbox_finished_at ON outbox(finished_at) WHERE finished_at IS NOT NULL;
