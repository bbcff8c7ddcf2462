-- Per-user upload quotas (api/quotas.py) sum a user's uploads of the last
-- hour and day on every upload: one index range per user and window, rather
-- than every row the user ever uploaded (idx_files_uploader) filtered by time.
CREATE INDEX IF NOT EXISTS idx_files_uploader_created ON files(uploaded_by, created_at);
