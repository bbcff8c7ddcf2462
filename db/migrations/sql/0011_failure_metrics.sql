-- Migration 0011: indexes for the exporter's failure metrics (worker/metrics.py),
-- which read these on every scrape: each reads only the few rows that failed
-- or re-drove something, never the whole table.

-- Files in a final failure (bad input, infected, unscannable, stuck, no
-- scanner): few, beside millions of completed ones. The counts by terminal
-- state (veza/files/states.py) group them by virus_scan_status.
CREATE INDEX idx_files_failed ON files(virus_scan_status) WHERE processing_status = 'failed';

-- What a maintenance run sent again: outbox rows re-driven, files requeued
-- (stalled, or failed and requeued by an operator). Immutable, so an index
-- predicate can use it; veza/maintenance/outcomes.py filters by the same call.
CREATE FUNCTION maintenance_redrives(counts jsonb) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN COALESCE((counts ->> 'outbox_redriven')::bigint, 0)
        + COALESCE((counts ->> 'stale_requeued')::bigint, 0)
        + COALESCE((counts ->> 'failed_requeued')::bigint, 0);

CREATE INDEX idx_maintenance_runs_redrives ON maintenance_runs(task_name)
    WHERE NOT dry_run AND maintenance_redrives(counts) > 0;
