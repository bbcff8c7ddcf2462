-- Our own job state: the transactional outbox and the maintenance run log.
-- Celery's result backend is not where job state lives (docs/schema.md).

-- Every piece of work a write causes, written in the write's transaction.
-- The relay publishes unsent rows to Celery with the row's id as task id,
-- then stamps sent_at. Tasks are idempotent, so at-least-once is safe.
CREATE TABLE outbox (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    task_name VARCHAR(200) NOT NULL,
    args JSONB NOT NULL DEFAULT '[]',
    kwargs JSONB NOT NULL DEFAULT '{}',
    queue VARCHAR(50),
    request_id UUID,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp(),
    sent_at TIMESTAMP WITH TIME ZONE,
    started_at TIMESTAMP WITH TIME ZONE,
    publish_attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX idx_outbox_unsent ON outbox(created_at) WHERE sent_at IS NULL;
CREATE INDEX idx_outbox_sent_at ON outbox(sent_at) WHERE sent_at IS NOT NULL;

-- Wakes the relay at commit (NOTIFY is delivered only if the transaction
-- commits, which is exactly the outbox's promise).
CREATE OR REPLACE FUNCTION notify_outbox()
RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('veza_outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_notify_outbox
    AFTER INSERT ON outbox
    FOR EACH STATEMENT
    EXECUTE FUNCTION notify_outbox();

-- One row per maintenance run: what it did, how it ended.
CREATE TABLE maintenance_runs (
    id BIGSERIAL PRIMARY KEY,
    task_name VARCHAR(200) NOT NULL,
    task_id VARCHAR(155),
    dry_run BOOLEAN NOT NULL DEFAULT FALSE,
    status VARCHAR(20) NOT NULL DEFAULT 'running',
    counts JSONB NOT NULL DEFAULT '{}',
    error TEXT,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp(),
    finished_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT valid_run_status CHECK (status IN ('running', 'succeeded', 'failed', 'skipped'))
);
CREATE INDEX idx_maintenance_runs_task ON maintenance_runs(task_name, started_at DESC);
