-- Migration 0010: a maintenance run's live progress, a way to stop it, and
-- outcomes that say what happened.

-- A dry run that finished changed nothing: it is recorded as `dry_run`, not
-- `succeeded`, so "last success" and the outcome metrics mean real work.
-- `cancelled`: an operator asked it to stop, and it stopped at a batch
-- boundary (every batch is its own transaction, so it left a consistent
-- state; the next run resumes).
ALTER TABLE maintenance_runs
    DROP CONSTRAINT valid_run_status,
    ADD CONSTRAINT valid_run_status
        CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'dry_run', 'cancelled')),
    -- Written by the running run about once a second (on its lock's
    -- connection, with the same round trip that checks the lock is held):
    -- the console reads live progress here, with no broker in between.
    ADD COLUMN phase VARCHAR(100),
    ADD COLUMN progress JSONB,
    ADD COLUMN progress_at TIMESTAMP WITH TIME ZONE,
    -- Set by `veza maintenance cancel` or the console; the run reads it
    -- when it publishes its progress.
    ADD COLUMN cancel_requested_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN cancel_requested_by VARCHAR(200);

-- Dry runs recorded before this migration as `succeeded`.
UPDATE maintenance_runs SET status = 'dry_run' WHERE dry_run AND status = 'succeeded';

-- The latest runs per outcome (the exporter, the console's list).
CREATE INDEX idx_maintenance_runs_status ON maintenance_runs(status, task_name, finished_at DESC);
