-- Maintenance: the retention archive and the room_stats rollup
-- (docs/maintenance.md).

-- ------------------------------------------------------------- archive
-- Messages past their room's retention are moved here before they are
-- deleted, and can be restored (worker/maintenance/retention.py) until
-- ARCHIVE_RETENTION_DAYS after archived_at. Same columns as the live tables
-- (LIKE), no defaults, no foreign keys: an archived row must survive the
-- deletion of what it pointed at.
CREATE TABLE archived_messages (LIKE messages);
ALTER TABLE archived_messages
    ADD COLUMN archived_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    ADD CONSTRAINT archived_messages_pkey PRIMARY KEY (id, created_at);
CREATE INDEX idx_archived_messages_room ON archived_messages(room_id, created_at, id);
CREATE INDEX idx_archived_messages_archived_at ON archived_messages(archived_at);

CREATE TABLE archived_reactions (LIKE reactions);
ALTER TABLE archived_reactions
    ADD COLUMN archived_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    ADD CONSTRAINT archived_reactions_pkey PRIMARY KEY (id);
CREATE INDEX idx_archived_reactions_message ON archived_reactions(message_id, message_created_at);
CREATE INDEX idx_archived_reactions_archived_at ON archived_reactions(archived_at);

-- File rows of archived messages; their blobs stay on disk while a row here
-- holds the hash (the orphan sweep counts these as references).
CREATE TABLE archived_files (LIKE files);
ALTER TABLE archived_files
    ADD COLUMN archived_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    ADD CONSTRAINT archived_files_pkey PRIMARY KEY (id);
CREATE INDEX idx_archived_files_message ON archived_files(message_id, message_created_at);
CREATE INDEX idx_archived_files_hash ON archived_files(file_hash);
CREATE INDEX idx_archived_files_archived_at ON archived_files(archived_at);

-- A reply younger than the retention cut-off survives its archived parent:
-- it is detached (parent set to NULL) and the link is kept here, so that
-- restoring the parent re-attaches it.
CREATE TABLE archived_reply_links (
    message_id INTEGER NOT NULL,
    message_created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    parent_message_id INTEGER NOT NULL,
    parent_created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    archived_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT archived_reply_links_pkey PRIMARY KEY (message_id, message_created_at)
);
CREATE INDEX idx_archived_reply_links_parent
    ON archived_reply_links(parent_message_id, parent_created_at);
CREATE INDEX idx_archived_reply_links_archived_at ON archived_reply_links(archived_at);

-- ------------------------------------------------------ room_stats rollup
-- The numbers of the seed's room_stats view, computed without reading the
-- whole message history: total_messages is rooms.message_count (kept exact
-- by triggers), last_message_at is one index probe per room, and the
-- 24h/7d windows read only the last 7 days of messages and the last 24 h of
-- reactions. So a refresh costs what happened recently, not the table size.
CREATE TABLE room_stats_rollup (
    room_id INTEGER PRIMARY KEY REFERENCES rooms(id) ON DELETE CASCADE,
    name VARCHAR(100) NOT NULL,
    member_count INTEGER NOT NULL,
    total_messages BIGINT NOT NULL,
    messages_24h BIGINT NOT NULL,
    messages_7d BIGINT NOT NULL,
    active_users_24h BIGINT NOT NULL,
    last_message_at TIMESTAMP WITH TIME ZONE,
    reactions_24h BIGINT NOT NULL,
    refreshed_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);

-- Same definitions as the view (NOW() is the transaction's start, as in
-- REFRESH MATERIALIZED VIEW), so both give identical numbers in one
-- transaction. Returns the number of rooms written.
CREATE OR REPLACE FUNCTION refresh_room_stats_rollup()
RETURNS integer AS $$
DECLARE
    v_rooms integer;
BEGIN
    -- Message ids are unique (a serial; a restore keeps them), so count(*)
    -- over messages alone equals the view's COUNT(DISTINCT m.id), which is
    -- there for the fan-out of its join with reactions.
    WITH recent AS (
        SELECT m.room_id, count(*) AS messages_7d
        FROM messages m
        WHERE m.room_id IS NOT NULL AND m.is_deleted = FALSE
          AND m.created_at >= NOW() - INTERVAL '7 days'
        GROUP BY m.room_id
    ), today AS (
        SELECT m.room_id, count(*) AS messages_24h,
               COUNT(DISTINCT m.author_id) AS active_users_24h
        FROM messages m
        WHERE m.room_id IS NOT NULL AND m.is_deleted = FALSE
          AND m.created_at >= NOW() - INTERVAL '24 hours'
        GROUP BY m.room_id
    ), reacting AS (
        -- Each recent reaction looks its message up by primary key (OFFSET 0
        -- keeps the planner from turning this into a scan of every message).
        SELECT m.room_id, COUNT(DISTINCT react.user_id) AS reactions_24h
        FROM reactions react
        CROSS JOIN LATERAL (
            SELECT m.room_id FROM messages m
            WHERE m.id = react.message_id AND m.created_at = react.message_created_at
              AND m.room_id IS NOT NULL AND m.is_deleted = FALSE
            OFFSET 0
        ) m
        WHERE react.created_at >= NOW() - INTERVAL '24 hours'
        GROUP BY m.room_id
    ), fresh AS (
        SELECT r.id AS room_id, r.name, r.member_count,
               r.message_count AS total_messages,
               COALESCE(today.messages_24h, 0) AS messages_24h,
               COALESCE(recent.messages_7d, 0) AS messages_7d,
               COALESCE(today.active_users_24h, 0) AS active_users_24h,
               (SELECT m.created_at FROM messages m
                WHERE m.room_id = r.id AND m.is_deleted = FALSE
                ORDER BY m.created_at DESC LIMIT 1) AS last_message_at,
               COALESCE(reacting.reactions_24h, 0) AS reactions_24h
        FROM rooms r
        LEFT JOIN recent ON recent.room_id = r.id
        LEFT JOIN today ON today.room_id = r.id
        LEFT JOIN reacting ON reacting.room_id = r.id
        WHERE r.is_archived = FALSE
    ), written AS (
        INSERT INTO room_stats_rollup AS s (
            room_id, name, member_count, total_messages, messages_24h, messages_7d,
            active_users_24h, last_message_at, reactions_24h, refreshed_at)
        SELECT fresh.*, NOW() FROM fresh
        ON CONFLICT (room_id) DO UPDATE SET
            name = EXCLUDED.name, member_count = EXCLUDED.member_count,
            total_messages = EXCLUDED.total_messages, messages_24h = EXCLUDED.messages_24h,
            messages_7d = EXCLUDED.messages_7d, active_users_24h = EXCLUDED.active_users_24h,
            last_message_at = EXCLUDED.last_message_at, reactions_24h = EXCLUDED.reactions_24h,
            refreshed_at = EXCLUDED.refreshed_at
        RETURNING 1
    )
    SELECT count(*) INTO v_rooms FROM written;
    -- Archived rooms leave the stats, as they leave the view.
    DELETE FROM room_stats_rollup s
    WHERE NOT EXISTS (SELECT 1 FROM rooms r WHERE r.id = s.room_id AND r.is_archived = FALSE);
    RETURN v_rooms;
END;
$$ LANGUAGE plpgsql;
