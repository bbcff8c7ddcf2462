-- Migration 0017: message reports (POST /messages/{id}/report,
-- veza/messages/moderation.py). One row per reporter and message (UNIQUE):
-- messages.flag_count is the count of these rows, and at the room's
-- flag_hold_threshold distinct reporters the message is held for review.
-- Reports are for room messages only, hence room_id NOT NULL.
-- The reference to the message cascades like the seed's other references
-- (reactions, message_mentions, notifications); the retention purge
-- deletes them by batch before it detaches a partition
-- (veza/messages/retention.py).
CREATE TABLE message_reports (
    id BIGSERIAL PRIMARY KEY,
    message_id INTEGER NOT NULL,
    message_created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    reporter_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    reason TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT message_reports_message_fkey FOREIGN KEY (message_id, message_created_at)
        REFERENCES messages(id, created_at) ON DELETE CASCADE,
    CONSTRAINT message_reports_message_reporter_key UNIQUE (message_id, reporter_id),
    CONSTRAINT valid_report_reason CHECK (length(reason) >= 1 AND length(reason) <= 1000)
);

-- The message's side of the reference: a purge deletes by it, and the
-- count of a message's reports reads it.
CREATE INDEX idx_message_reports_message ON message_reports(message_id, message_created_at);
