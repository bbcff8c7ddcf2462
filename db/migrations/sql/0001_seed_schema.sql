-- The seed's data model (shared/seed/veza-data-models.md), made to apply on
-- PostgreSQL 15. Every deviation from the seed is listed, with its reason, in
-- docs/schema.md; the comments here only point at them.

-- Enums first: the seed creates them after the tables that use them.
CREATE TYPE user_role AS ENUM ('guest', 'user', 'moderator', 'admin');
CREATE TYPE room_member_role AS ENUM ('member', 'moderator', 'admin');
CREATE TYPE notification_level AS ENUM ('none', 'mentions', 'all');
CREATE TYPE message_content_type AS ENUM ('text', 'markdown', 'html', 'code');
CREATE TYPE moderation_status AS ENUM ('pending', 'approved', 'rejected', 'flagged');
CREATE TYPE file_processing_status AS ENUM ('pending', 'processing', 'completed', 'failed');
CREATE TYPE virus_scan_status AS ENUM ('pending', 'scanning', 'clean', 'infected', 'failed');
CREATE TYPE audit_severity AS ENUM ('debug', 'info', 'warning', 'error', 'critical');

-- ---------------------------------------------------------------- users
CREATE TABLE users (
    id SERIAL PRIMARY KEY,
    uuid UUID DEFAULT gen_random_uuid() UNIQUE NOT NULL,
    username VARCHAR(50) UNIQUE NOT NULL,
    email VARCHAR(255) UNIQUE NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    salt VARCHAR(32),  -- argon2id's encoded hash carries its own salt (docs/schema.md)
    display_name VARCHAR(100),
    bio TEXT,
    avatar_url VARCHAR(500),
    status_message VARCHAR(200),
    timezone VARCHAR(50) DEFAULT 'UTC',
    language VARCHAR(10) DEFAULT 'fr',
    role user_role NOT NULL DEFAULT 'user',
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    is_verified BOOLEAN NOT NULL DEFAULT FALSE,
    last_login_at TIMESTAMP WITH TIME ZONE,
    last_seen_at TIMESTAMP WITH TIME ZONE,
    failed_login_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until TIMESTAMP WITH TIME ZONE,
    totp_secret VARCHAR(32),
    totp_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    backup_codes TEXT[],
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    deleted_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT valid_email CHECK (email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'),
    CONSTRAINT valid_username CHECK (username ~* '^[a-zA-Z0-9_-]{3,50}$'),
    CONSTRAINT valid_timezone CHECK (timezone IS NULL OR length(timezone) <= 50)
);
CREATE INDEX idx_users_username ON users(username);
CREATE INDEX idx_users_email ON users(email);
CREATE INDEX idx_users_role ON users(role);
CREATE INDEX idx_users_active ON users(is_active) WHERE is_active = TRUE;
CREATE INDEX idx_users_last_seen ON users(last_seen_at);
CREATE INDEX idx_users_created_at ON users(created_at);

-- ---------------------------------------------------------------- rooms
CREATE TABLE rooms (
    id SERIAL PRIMARY KEY,
    uuid UUID DEFAULT gen_random_uuid() UNIQUE NOT NULL,
    name VARCHAR(100) NOT NULL,
    description TEXT,
    topic VARCHAR(500),
    is_public BOOLEAN NOT NULL DEFAULT TRUE,
    is_archived BOOLEAN NOT NULL DEFAULT FALSE,
    max_members INTEGER NOT NULL DEFAULT 1000,
    message_retention_days INTEGER NOT NULL DEFAULT 0, -- 0 = keep forever
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    member_count INTEGER NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    last_activity_at TIMESTAMP WITH TIME ZONE,
    slow_mode_seconds INTEGER NOT NULL DEFAULT 0,
    is_nsfw BOOLEAN NOT NULL DEFAULT FALSE,
    welcome_message TEXT,
    rules TEXT,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT valid_name CHECK (length(name) >= 1 AND length(name) <= 100),
    CONSTRAINT valid_max_members CHECK (max_members > 0 AND max_members <= 10000),
    CONSTRAINT valid_slow_mode CHECK (slow_mode_seconds >= 0 AND slow_mode_seconds <= 3600),
    -- A counter below zero is a trigger bug made visible at once (docs/schema.md).
    CONSTRAINT valid_retention CHECK (message_retention_days >= 0),
    CONSTRAINT valid_counts CHECK (member_count >= 0 AND message_count >= 0)
);
CREATE INDEX idx_rooms_name ON rooms(name);
CREATE INDEX idx_rooms_owner ON rooms(owner_id);
CREATE INDEX idx_rooms_public ON rooms(is_public) WHERE is_public = TRUE;
CREATE INDEX idx_rooms_active ON rooms(is_archived) WHERE is_archived = FALSE;
CREATE INDEX idx_rooms_activity ON rooms(last_activity_at);
CREATE INDEX idx_rooms_created_at ON rooms(created_at);
CREATE INDEX idx_rooms_metadata ON rooms USING GIN(metadata);
CREATE INDEX idx_rooms_retention ON rooms(id) WHERE message_retention_days > 0;

-- --------------------------------------------------------- room_members
CREATE TABLE room_members (
    id SERIAL PRIMARY KEY,
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role room_member_role NOT NULL DEFAULT 'member',
    can_invite BOOLEAN NOT NULL DEFAULT FALSE,
    can_manage_messages BOOLEAN NOT NULL DEFAULT FALSE,
    can_manage_members BOOLEAN NOT NULL DEFAULT FALSE,
    is_muted BOOLEAN NOT NULL DEFAULT FALSE,
    muted_until TIMESTAMP WITH TIME ZONE,
    notification_level notification_level NOT NULL DEFAULT 'all',
    message_count INTEGER NOT NULL DEFAULT 0,
    last_read_message_id INTEGER,
    joined_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    invited_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    custom_nickname VARCHAR(100),
    CONSTRAINT room_members_room_id_user_id_key UNIQUE (room_id, user_id),
    CONSTRAINT valid_nickname CHECK (custom_nickname IS NULL OR length(custom_nickname) <= 100)
);
CREATE INDEX idx_room_members_room ON room_members(room_id);
CREATE INDEX idx_room_members_user ON room_members(user_id);
CREATE INDEX idx_room_members_role ON room_members(role);
CREATE INDEX idx_room_members_active ON room_members(room_id, user_id) WHERE is_muted = FALSE;
CREATE INDEX idx_room_members_joined ON room_members(joined_at);

-- ------------------------------------------------- direct_conversations
-- Created before messages, which references it.
CREATE TABLE direct_conversations (
    id SERIAL PRIMARY KEY,
    uuid UUID DEFAULT gen_random_uuid() UNIQUE NOT NULL,
    participant_ids INTEGER[] NOT NULL,
    is_blocked BOOLEAN NOT NULL DEFAULT FALSE,
    blocked_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    last_activity_at TIMESTAMP WITH TIME ZONE,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT valid_participants CHECK (array_length(participant_ids, 1) = 2),
    CONSTRAINT ordered_participants CHECK (participant_ids[1] < participant_ids[2]),
    CONSTRAINT valid_dm_message_count CHECK (message_count >= 0)
);
CREATE UNIQUE INDEX idx_direct_conversations_participants ON direct_conversations(participant_ids);
CREATE INDEX idx_direct_conversations_participant ON direct_conversations USING GIN(participant_ids);
CREATE INDEX idx_direct_conversations_active ON direct_conversations(last_activity_at);
CREATE INDEX idx_direct_conversations_blocked ON direct_conversations(id) WHERE is_blocked = TRUE;

CREATE TABLE direct_conversation_participants (
    id SERIAL PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES direct_conversations(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    notification_level notification_level NOT NULL DEFAULT 'all',
    last_read_message_id INTEGER,
    unread_count INTEGER NOT NULL DEFAULT 0,
    joined_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT direct_conversation_participants_conversation_id_user_id_key UNIQUE (conversation_id, user_id)
);
CREATE INDEX idx_dm_participants_conversation ON direct_conversation_participants(conversation_id);
CREATE INDEX idx_dm_participants_user ON direct_conversation_participants(user_id);

-- ------------------------------------------------------------- messages
-- Range-partitioned by month on created_at, so created_at is part of every
-- unique key, and every reference to a message carries the message's
-- created_at beside its id (composite foreign keys, with real ON DELETE
-- CASCADE). See docs/schema.md, "Partitioning".
CREATE TABLE messages (
    id SERIAL,
    uuid UUID DEFAULT gen_random_uuid() NOT NULL,
    room_id INTEGER REFERENCES rooms(id) ON DELETE CASCADE,
    conversation_id INTEGER REFERENCES direct_conversations(id) ON DELETE CASCADE,
    author_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    content TEXT NOT NULL,
    content_type message_content_type NOT NULL DEFAULT 'text',
    raw_content TEXT,
    parent_message_id INTEGER,
    parent_created_at TIMESTAMP WITH TIME ZONE,
    thread_count INTEGER NOT NULL DEFAULT 0,
    is_thread_root BOOLEAN NOT NULL DEFAULT FALSE,
    is_edited BOOLEAN NOT NULL DEFAULT FALSE,
    edit_count INTEGER NOT NULL DEFAULT 0,
    is_deleted BOOLEAN NOT NULL DEFAULT FALSE,
    is_pinned BOOLEAN NOT NULL DEFAULT FALSE,
    mentions INTEGER[] NOT NULL DEFAULT '{}',
    referenced_message_ids INTEGER[] NOT NULL DEFAULT '{}',
    reaction_count INTEGER NOT NULL DEFAULT 0,
    is_flagged BOOLEAN NOT NULL DEFAULT FALSE,
    flag_count INTEGER NOT NULL DEFAULT 0,
    moderation_status moderation_status NOT NULL DEFAULT 'approved',
    moderated_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    moderation_reason TEXT,
    metadata JSONB NOT NULL DEFAULT '{}',
    ip_address INET,
    user_agent TEXT,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    edited_at TIMESTAMP WITH TIME ZONE,
    deleted_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT messages_pkey PRIMARY KEY (id, created_at),
    CONSTRAINT messages_uuid_created_at_key UNIQUE (uuid, created_at),
    CONSTRAINT messages_parent_fkey FOREIGN KEY (parent_message_id, parent_created_at)
        REFERENCES messages(id, created_at) ON DELETE CASCADE,
    CONSTRAINT message_location_check CHECK (
        (room_id IS NOT NULL AND conversation_id IS NULL) OR
        (room_id IS NULL AND conversation_id IS NOT NULL)
    ),
    CONSTRAINT valid_content CHECK (length(trim(content)) > 0 AND length(content) <= 4000),
    CONSTRAINT valid_thread_count CHECK (thread_count >= 0),
    CONSTRAINT valid_edit_count CHECK (edit_count >= 0),
    CONSTRAINT valid_parent_ref CHECK ((parent_message_id IS NULL) = (parent_created_at IS NULL))
) PARTITION BY RANGE (created_at);
CREATE INDEX idx_messages_room ON messages(room_id, created_at DESC) WHERE room_id IS NOT NULL;
CREATE INDEX idx_messages_conversation ON messages(conversation_id, created_at DESC) WHERE conversation_id IS NOT NULL;
CREATE INDEX idx_messages_author ON messages(author_id, created_at DESC);
CREATE INDEX idx_messages_parent ON messages(parent_message_id) WHERE parent_message_id IS NOT NULL;
CREATE INDEX idx_messages_thread_root ON messages(id) WHERE is_thread_root = TRUE;
CREATE INDEX idx_messages_pinned ON messages(room_id) WHERE is_pinned = TRUE;
CREATE INDEX idx_messages_flagged ON messages(id) WHERE is_flagged = TRUE;
CREATE INDEX idx_messages_mentions ON messages USING GIN(mentions);
CREATE INDEX idx_messages_created_at ON messages(created_at);
CREATE INDEX idx_messages_metadata ON messages USING GIN(metadata);
CREATE INDEX idx_messages_active ON messages(room_id, created_at DESC)
    WHERE is_deleted = FALSE AND room_id IS NOT NULL;
CREATE INDEX idx_messages_room_pagination ON messages(room_id, id DESC) WHERE is_deleted = FALSE;
CREATE INDEX idx_messages_conversation_pagination ON messages(conversation_id, id DESC) WHERE is_deleted = FALSE;
CREATE INDEX idx_messages_search ON messages USING GIN(to_tsvector('french', content)) WHERE is_deleted = FALSE;
CREATE INDEX idx_messages_user_mentions ON messages(author_id, created_at DESC)
    WHERE mentions IS NOT NULL AND array_length(mentions, 1) > 0;

-- ------------------------------------------------------ message_mentions
-- Named by the seed's ERD without DDL. Derived from messages.mentions by a
-- trigger, so the two can never disagree.
CREATE TABLE message_mentions (
    message_id INTEGER NOT NULL,
    message_created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT message_mentions_pkey PRIMARY KEY (message_id, message_created_at, user_id),
    CONSTRAINT message_mentions_message_fkey FOREIGN KEY (message_id, message_created_at)
        REFERENCES messages(id, created_at) ON DELETE CASCADE
);
CREATE INDEX idx_message_mentions_user ON message_mentions(user_id, message_created_at DESC);

-- ------------------------------------------------------------ reactions
CREATE TABLE reactions (
    id SERIAL PRIMARY KEY,
    message_id INTEGER NOT NULL,
    message_created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji VARCHAR(20) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT reactions_message_fkey FOREIGN KEY (message_id, message_created_at)
        REFERENCES messages(id, created_at) ON DELETE CASCADE,
    CONSTRAINT reactions_message_id_user_id_emoji_key UNIQUE (message_id, user_id, emoji),
    CONSTRAINT valid_emoji CHECK (length(emoji) >= 1 AND length(emoji) <= 20)
);
CREATE INDEX idx_reactions_message ON reactions(message_id, message_created_at);
CREATE INDEX idx_reactions_user ON reactions(user_id);
CREATE INDEX idx_reactions_emoji ON reactions(emoji);
CREATE INDEX idx_reactions_created_at ON reactions(created_at);
CREATE INDEX idx_reactions_message_emoji ON reactions(message_id, emoji);
CREATE INDEX idx_reactions_user_history ON reactions(user_id, created_at DESC);

-- ---------------------------------------------------------------- files
CREATE TABLE files (
    id SERIAL PRIMARY KEY,
    uuid UUID DEFAULT gen_random_uuid() UNIQUE NOT NULL,
    filename VARCHAR(255) NOT NULL,
    original_filename VARCHAR(255) NOT NULL,
    file_path VARCHAR(500) NOT NULL,
    file_size BIGINT NOT NULL,
    -- Sniffed by the worker; the upload only knows the client's claim.
    mime_type VARCHAR(100) NOT NULL DEFAULT 'application/octet-stream',
    -- NULL until the hash step has read the content (docs/schema.md).
    file_hash VARCHAR(64),
    uploaded_by INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    room_id INTEGER REFERENCES rooms(id) ON DELETE CASCADE,
    message_id INTEGER,
    message_created_at TIMESTAMP WITH TIME ZONE,
    is_processed BOOLEAN NOT NULL DEFAULT FALSE,
    thumbnail_path VARCHAR(500),
    processing_status file_processing_status NOT NULL DEFAULT 'pending',
    virus_scan_status virus_scan_status NOT NULL DEFAULT 'pending',
    virus_scan_result TEXT,
    metadata JSONB NOT NULL DEFAULT '{}',
    download_count INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    expires_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT files_message_fkey FOREIGN KEY (message_id, message_created_at)
        REFERENCES messages(id, created_at) ON DELETE CASCADE,
    CONSTRAINT valid_filename CHECK (length(filename) > 0 AND length(filename) <= 255),
    CONSTRAINT valid_file_size CHECK (file_size > 0 AND file_size <= 104857600), -- 100MB
    CONSTRAINT valid_hash CHECK (file_hash IS NULL OR length(file_hash) = 64),
    CONSTRAINT valid_message_ref CHECK ((message_id IS NULL) = (message_created_at IS NULL))
);
CREATE INDEX idx_files_uploader ON files(uploaded_by);
CREATE INDEX idx_files_room ON files(room_id) WHERE room_id IS NOT NULL;
CREATE INDEX idx_files_message ON files(message_id, message_created_at) WHERE message_id IS NOT NULL;
CREATE INDEX idx_files_hash ON files(file_hash);
CREATE INDEX idx_files_mime_type ON files(mime_type);
CREATE INDEX idx_files_created_at ON files(created_at);
CREATE INDEX idx_files_expires_at ON files(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX idx_files_virus_scan ON files(virus_scan_status);
CREATE INDEX idx_files_processing ON files(processing_status) WHERE processing_status IN ('pending', 'processing');

-- ----------------------------------------------------------- audit_logs
CREATE TABLE audit_logs (
    id BIGSERIAL,
    event_type VARCHAR(50) NOT NULL,
    event_data JSONB NOT NULL,
    -- SET NULL: an audit trail must not block deleting a user or a room.
    user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    ip_address INET,
    user_agent TEXT,
    resource_type VARCHAR(50),
    resource_id INTEGER,
    room_id INTEGER REFERENCES rooms(id) ON DELETE SET NULL,
    request_id UUID,
    session_id UUID,
    severity audit_severity NOT NULL DEFAULT 'info',
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    CONSTRAINT audit_logs_pkey PRIMARY KEY (id, created_at),
    CONSTRAINT valid_event_type CHECK (length(event_type) > 0)
) PARTITION BY RANGE (created_at);
CREATE INDEX idx_audit_logs_event_type ON audit_logs(event_type);
CREATE INDEX idx_audit_logs_user ON audit_logs(user_id) WHERE user_id IS NOT NULL;
CREATE INDEX idx_audit_logs_resource ON audit_logs(resource_type, resource_id);
CREATE INDEX idx_audit_logs_room ON audit_logs(room_id) WHERE room_id IS NOT NULL;
CREATE INDEX idx_audit_logs_created_at ON audit_logs(created_at);
CREATE INDEX idx_audit_logs_severity ON audit_logs(severity);
CREATE INDEX idx_audit_logs_ip ON audit_logs(ip_address) WHERE ip_address IS NOT NULL;

-- -------------------------------------------------------- user_sessions
CREATE TABLE user_sessions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash VARCHAR(64) NOT NULL,
    access_token_jti UUID,
    ip_address INET,
    user_agent TEXT,
    device_info JSONB,
    location_info JSONB,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    last_activity_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
    CONSTRAINT valid_expires_at CHECK (expires_at > created_at)
);
CREATE INDEX idx_user_sessions_user ON user_sessions(user_id);
CREATE UNIQUE INDEX idx_user_sessions_token_hash ON user_sessions(token_hash);
CREATE INDEX idx_user_sessions_active ON user_sessions(user_id, is_active) WHERE is_active = TRUE;
CREATE INDEX idx_user_sessions_expires_at ON user_sessions(expires_at);
CREATE INDEX idx_user_sessions_last_activity ON user_sessions(last_activity_at);

-- ------------------------------------------------------------ partitions
-- Creates the monthly partitions of a range-partitioned parent, from
-- p_first_month for p_months months; returns the names it created. Month
-- bounds are UTC midnights whatever the session's TimeZone.
-- Idempotent, and safe under concurrency: callers serialise on an advisory
-- transaction lock per parent, and existing partitions are skipped.
CREATE OR REPLACE FUNCTION create_monthly_partitions(
    p_parent regclass, p_first_month date, p_months integer
) RETURNS SETOF text AS $$
DECLARE
    v_month date := date_trunc('month', p_first_month)::date;
    v_name text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('veza:partitions:' || p_parent::text));
    FOR i IN 0 .. p_months - 1 LOOP
        v_name := p_parent::text || to_char(v_month, '"_y"YYYY"m"MM');
        IF to_regclass(v_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                v_name, p_parent, v_month::timestamp AT TIME ZONE 'UTC',
                (v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC');
            RETURN NEXT v_name;
        END IF;
        v_month := (v_month + interval '1 month')::date;
    END LOOP;
END;
$$ LANGUAGE plpgsql;

-- Premake the current month and the next three (the maintenance task keeps
-- going from there).
SELECT create_monthly_partitions('messages', (now() AT TIME ZONE 'UTC')::date, 4);
SELECT create_monthly_partitions('audit_logs', (now() AT TIME ZONE 'UTC')::date, 4);

-- ------------------------------------------------------------- triggers
-- Keeps rooms.message_count, direct_conversations.message_count, the
-- activity timestamps and parents' thread_count equal to a recount of
-- non-deleted messages. The seed decremented again when a message that was
-- already soft-deleted was physically deleted; here only a live row counts.
CREATE OR REPLACE FUNCTION message_counter_delta(p_message messages, p_delta integer)
RETURNS void AS $$
BEGIN
    IF p_message.room_id IS NOT NULL THEN
        UPDATE rooms SET message_count = message_count + p_delta
        WHERE id = p_message.room_id;
    ELSE
        UPDATE direct_conversations SET message_count = message_count + p_delta
        WHERE id = p_message.conversation_id;
    END IF;
    IF p_message.parent_message_id IS NOT NULL THEN
        UPDATE messages
        SET thread_count = thread_count + p_delta,
            is_thread_root = (thread_count + p_delta) > 0
        WHERE id = p_message.parent_message_id
          AND created_at = p_message.parent_created_at;
    END IF;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION update_room_stats()
RETURNS TRIGGER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT NEW.is_deleted THEN
            PERFORM message_counter_delta(NEW, 1);
        END IF;
        -- Activity is the message's own time, so that restoring archived
        -- messages does not fake recent activity.
        IF NEW.room_id IS NOT NULL THEN
            UPDATE rooms SET last_activity_at = GREATEST(last_activity_at, NEW.created_at)
            WHERE id = NEW.room_id;
        ELSE
            UPDATE direct_conversations
            SET last_activity_at = GREATEST(last_activity_at, NEW.created_at)
            WHERE id = NEW.conversation_id;
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT OLD.is_deleted AND NEW.is_deleted THEN
            PERFORM message_counter_delta(NEW, -1);
        ELSIF OLD.is_deleted AND NOT NEW.is_deleted THEN
            PERFORM message_counter_delta(NEW, 1);
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        IF NOT OLD.is_deleted THEN
            PERFORM message_counter_delta(OLD, -1);
        END IF;
        RETURN OLD;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- Only a change of is_deleted moves a counter: edits, pins and reaction
-- counts must not pay for the trigger.
CREATE TRIGGER trigger_update_room_stats
    AFTER INSERT OR DELETE OR UPDATE OF is_deleted ON messages
    FOR EACH ROW
    EXECUTE FUNCTION update_room_stats();

CREATE OR REPLACE FUNCTION sync_message_mentions()
RETURNS TRIGGER AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM message_mentions
        WHERE message_id = NEW.id AND message_created_at = NEW.created_at
          AND NOT (user_id = ANY (NEW.mentions));
    END IF;
    INSERT INTO message_mentions (message_id, message_created_at, user_id)
    SELECT NEW.id, NEW.created_at, u.id
    FROM users u
    WHERE u.id = ANY (NEW.mentions)
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_sync_message_mentions
    AFTER INSERT OR UPDATE OF mentions ON messages
    FOR EACH ROW
    EXECUTE FUNCTION sync_message_mentions();

CREATE OR REPLACE FUNCTION manage_room_member_count()
RETURNS TRIGGER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE rooms SET member_count = member_count + 1 WHERE id = NEW.room_id;
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE rooms SET member_count = member_count - 1 WHERE id = OLD.room_id;
        RETURN OLD;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_manage_room_member_count
    AFTER INSERT OR DELETE ON room_members
    FOR EACH ROW
    EXECUTE FUNCTION manage_room_member_count();

-- ---------------------------------------------------- views and functions
CREATE MATERIALIZED VIEW room_stats AS
SELECT
    r.id as room_id,
    r.name,
    r.member_count,
    COUNT(DISTINCT m.id) as total_messages,
    COUNT(DISTINCT m.id) FILTER (WHERE m.created_at >= NOW() - INTERVAL '24 hours') as messages_24h,
    COUNT(DISTINCT m.id) FILTER (WHERE m.created_at >= NOW() - INTERVAL '7 days') as messages_7d,
    COUNT(DISTINCT m.author_id) FILTER (WHERE m.created_at >= NOW() - INTERVAL '24 hours') as active_users_24h,
    MAX(m.created_at) as last_message_at,
    COUNT(DISTINCT react.user_id) FILTER (WHERE react.created_at >= NOW() - INTERVAL '24 hours') as reactions_24h
FROM rooms r
LEFT JOIN messages m ON r.id = m.room_id AND m.is_deleted = FALSE
LEFT JOIN reactions react ON m.id = react.message_id AND m.created_at = react.message_created_at
WHERE r.is_archived = FALSE
GROUP BY r.id, r.name, r.member_count;

-- REFRESH ... CONCURRENTLY needs a unique index on the view.
CREATE UNIQUE INDEX idx_room_stats_room ON room_stats(room_id);
CREATE INDEX idx_room_stats_messages_24h ON room_stats(messages_24h DESC);
CREATE INDEX idx_room_stats_active_users ON room_stats(active_users_24h DESC);

CREATE OR REPLACE FUNCTION refresh_room_stats()
RETURNS void AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY room_stats;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION calculate_unread_count(
    p_user_id INTEGER,
    p_room_id INTEGER
) RETURNS INTEGER AS $$
DECLARE
    v_last_read_id INTEGER;
    v_unread_count INTEGER;
BEGIN
    SELECT rm.last_read_message_id
    INTO v_last_read_id
    FROM room_members rm
    WHERE rm.user_id = p_user_id AND rm.room_id = p_room_id;

    SELECT COUNT(*)
    INTO v_unread_count
    FROM messages m
    WHERE m.room_id = p_room_id
      AND (v_last_read_id IS NULL OR m.id > v_last_read_id)
      AND m.is_deleted = FALSE
      AND m.author_id != p_user_id;

    RETURN COALESCE(v_unread_count, 0);
END;
$$ LANGUAGE plpgsql STABLE;
