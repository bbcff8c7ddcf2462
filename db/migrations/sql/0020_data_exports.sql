-- Migration 0020: a user's data exports (POST /users/me/export, built by the
-- accounts.export task: veza/accounts/export.py). One row per export: its
-- status, the zip's place in storage and size, the phase it is in, and when
-- it stops being downloadable (then purge_expired_files removes the zip and
-- the row says 'expired').
CREATE TABLE data_exports (
    id BIGSERIAL PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    storage_path VARCHAR(500),
    size_bytes BIGINT,
    phase VARCHAR(50),
    error TEXT,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    finished_at TIMESTAMP WITH TIME ZONE,
    expires_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT valid_export_status
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'expired'))
);
-- A user's exports, newest first.
CREATE INDEX idx_data_exports_user ON data_exports(user_id, id DESC);
-- One export in flight per user: asking again while one runs gets that one.
CREATE UNIQUE INDEX idx_data_exports_in_flight ON data_exports(user_id)
    WHERE status IN ('pending', 'running');
-- The purge's due list.
CREATE INDEX idx_data_exports_expiry ON data_exports(expires_at) WHERE status = 'done';
