-- Migration 0016: notifications (veza/notifications/): what a message owes
-- the people it concerns, written after commit by messages.index, read by
-- GET /api/v1/notifications, and emailed when left unread
-- (maintenance.email_missed_notifications).
--
-- kind, weakest to strongest (the enum's order): a message in a room whose
-- member asked for 'all', a reply to one's message, a mention, a DM. One
-- row per recipient and message (UNIQUE): a re-run of the fan-out finds its
-- rows there and writes nothing, and a message that is both a reply and a
-- mention is one notification, of the stronger kind.
-- The reference to the message cascades like the seed's other references
-- (reactions, message_mentions): a purged message takes its notifications.
-- emailed_at: when a missed-message email listed it (never listed twice).
CREATE TYPE notification_kind AS ENUM ('message', 'reply', 'mention', 'dm');

CREATE TABLE notifications (
    id BIGSERIAL PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind notification_kind NOT NULL,
    message_id INTEGER NOT NULL,
    message_created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    room_id INTEGER REFERENCES rooms(id) ON DELETE CASCADE,
    conversation_id INTEGER REFERENCES direct_conversations(id) ON DELETE CASCADE,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    read_at TIMESTAMP WITH TIME ZONE,
    emailed_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT notifications_message_fkey FOREIGN KEY (message_id, message_created_at)
        REFERENCES messages(id, created_at) ON DELETE CASCADE,
    CONSTRAINT notifications_user_message_key UNIQUE (user_id, message_id),
    CONSTRAINT notification_location_check CHECK (
        (room_id IS NOT NULL AND conversation_id IS NULL) OR
        (room_id IS NULL AND conversation_id IS NOT NULL)
    )
);

-- A user's feed, newest first, and its unread part (GET /notifications).
CREATE INDEX idx_notifications_user ON notifications(user_id, id DESC);
CREATE INDEX idx_notifications_unread ON notifications(user_id, id DESC) WHERE read_at IS NULL;
-- The message's side of the reference: a purge deletes by it.
CREATE INDEX idx_notifications_message ON notifications(message_id, message_created_at);
-- What the missed-message email still owes, oldest first.
CREATE INDEX idx_notifications_email_due ON notifications(created_at)
    WHERE read_at IS NULL AND emailed_at IS NULL;

-- email_notifications: the user's choice (PUT /notifications/settings, or
-- the email's unsubscribe link). notification_email_at: the last
-- missed-message email, which spaces them (NOTIFY_EMAIL_PERIOD_SECONDS).
ALTER TABLE users
    ADD COLUMN email_notifications BOOLEAN NOT NULL DEFAULT TRUE,
    ADD COLUMN notification_email_at TIMESTAMP WITH TIME ZONE;
