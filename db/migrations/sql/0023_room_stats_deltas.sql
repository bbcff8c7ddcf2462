-- Migration 0023: a room_stats refresh that follows the change (issue 17).
--
-- The rollup of migration 0003 recomputed the last 7 days of messages and
-- the last 24 h of reactions on every refresh: its cost grew with the
-- week's traffic. Here the refresh reads only what changed since the last
-- one:
-- - the changes the triggers below wrote into room_stats_deltas (a
--   message or reaction that started or stopped counting, a room renamed,
--   joined, archived);
-- - the rows that left a window because the clock moved on, found through
--   the created_at indexes over [last refresh - window, now - window);
-- and it adjusts the stored numbers by them. The distinct counts
-- (active_users_24h, reactions_24h) are kept exact through per-user counts
-- in room_stats_windows: a user counts while their count is above zero.
-- The numbers stay the seed's definition (tests/test_room_stats_deltas.py
-- checks them against the seed's query after random changes).

-- ---------------------------------------------------------------- tables

-- What changed since the last refresh. Append-only and unindexed, so that
-- the chat path's insert costs one heap row; the refresh consumes it all.
-- kind: 'm' a message started (+1) or stopped (-1) counting (message_id is
-- set when a live message was deleted outright), 'r' a reaction did, 'o' the
-- room's own row changed, 'x' a reaction whose message was deleted in the
-- same statement (its room comes from that message's 'm' row).
CREATE TABLE room_stats_deltas (
    room_id INTEGER,
    user_id INTEGER,
    created_at TIMESTAMP WITH TIME ZONE,
    kind CHAR(1) NOT NULL,
    delta SMALLINT NOT NULL,
    message_id INTEGER,
    message_created_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT valid_room_stats_delta_kind CHECK (kind IN ('m', 'r', 'o', 'x'))
);

-- Per room, what the windows hold, for every room (archived ones too, so
-- that unarchiving needs no recount): kind 'd' live messages of the last
-- 24 h per author, 'r' reactions of the last 24 h on live messages per
-- reacting user, 'w' live messages of the last 7 days (user_id 0). Only
-- non-zero counts are stored.
CREATE TABLE room_stats_windows (
    room_id INTEGER NOT NULL,
    kind CHAR(1) NOT NULL,
    user_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    CONSTRAINT room_stats_windows_pkey PRIMARY KEY (room_id, kind, user_id),
    CONSTRAINT valid_room_stats_window_kind CHECK (kind IN ('d', 'r', 'w')),
    CONSTRAINT valid_room_stats_window_count CHECK (n > 0)
);

-- The now() of the last refresh (one row); none: the next refresh rebuilds.
CREATE TABLE room_stats_refresh (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE,
    refreshed_now TIMESTAMP WITH TIME ZONE NOT NULL,
    CONSTRAINT room_stats_refresh_singleton CHECK (singleton)
);

-- ---------------------------------------------------------------- triggers

-- A new message counts if it is live and in a room (a direct message is not
-- in room_stats). One INSERT per statement, whatever the rows: a chat post
-- pays one small insert.
CREATE OR REPLACE FUNCTION room_stats_messages_written()
RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO room_stats_deltas (room_id, user_id, created_at, kind, delta)
        SELECT room_id, author_id, created_at, 'm', 1 FROM new_rows
        WHERE room_id IS NOT NULL AND NOT is_deleted;
    ELSE
        -- The key lets the cascaded deletes of its reactions ('x') find the
        -- room: by the time the reactions' trigger runs, the message is gone.
        INSERT INTO room_stats_deltas
            (room_id, user_id, created_at, kind, delta, message_id, message_created_at)
        SELECT room_id, author_id, created_at, 'm', -1, id, created_at FROM old_rows
        WHERE room_id IS NOT NULL AND NOT is_deleted;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_room_stats_messages_inserted
    AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_stats_messages_written();
CREATE TRIGGER trigger_room_stats_messages_deleted
    AFTER DELETE ON messages REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_stats_messages_written();

-- A message that stops (or starts) counting takes its reactions with it.
CREATE OR REPLACE FUNCTION room_stats_message_counts(p_message messages, p_delta smallint)
RETURNS void AS $$
BEGIN
    IF p_message.room_id IS NULL OR p_message.is_deleted THEN
        RETURN;
    END IF;
    INSERT INTO room_stats_deltas (room_id, user_id, created_at, kind, delta)
    SELECT p_message.room_id, p_message.author_id, p_message.created_at, 'm', p_delta
    UNION ALL
    SELECT p_message.room_id, r.user_id, r.created_at, 'r', p_delta FROM reactions r
    WHERE r.message_id = p_message.id AND r.message_created_at = p_message.created_at;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION room_stats_message_updated()
RETURNS trigger AS $$
BEGIN
    PERFORM room_stats_message_counts(OLD, -1::smallint);
    PERFORM room_stats_message_counts(NEW, 1::smallint);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- Row level, so that the WHEN filters in C: an edit, a pin, a reaction
-- count or a thread count (most updates of messages) calls no function.
-- (A statement trigger with transition tables cannot name columns.)
CREATE TRIGGER trigger_room_stats_message_updated
    AFTER UPDATE OF is_deleted, room_id, author_id ON messages
    FOR EACH ROW
    WHEN (OLD.is_deleted IS DISTINCT FROM NEW.is_deleted
          OR OLD.room_id IS DISTINCT FROM NEW.room_id
          OR OLD.author_id IS DISTINCT FROM NEW.author_id)
    EXECUTE FUNCTION room_stats_message_updated();

-- A reaction counts while its message is live and in a room. The message
-- row is locked by trigger_reactions_count (migration 0004) before this
-- runs, so a concurrent soft delete cannot slip between.
CREATE OR REPLACE FUNCTION room_stats_reactions_written()
RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO room_stats_deltas (room_id, user_id, created_at, kind, delta)
        SELECT m.room_id, r.user_id, r.created_at, 'r', 1
        FROM new_rows r
        JOIN messages m ON m.id = r.message_id AND m.created_at = r.message_created_at
        WHERE m.room_id IS NOT NULL AND NOT m.is_deleted;
    ELSE
        INSERT INTO room_stats_deltas
            (room_id, user_id, created_at, kind, delta, message_id, message_created_at)
        SELECT m.room_id, r.user_id, r.created_at,
               CASE WHEN m.id IS NULL THEN 'x' ELSE 'r' END, -1,
               r.message_id, r.message_created_at
        FROM old_rows r
        LEFT JOIN messages m ON m.id = r.message_id AND m.created_at = r.message_created_at
        WHERE m.id IS NULL OR (m.room_id IS NOT NULL AND NOT m.is_deleted);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_room_stats_reactions_inserted
    AFTER INSERT ON reactions REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_stats_reactions_written();
CREATE TRIGGER trigger_room_stats_reactions_deleted
    AFTER DELETE ON reactions REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_stats_reactions_written();

-- The room's own columns in room_stats (name, member_count, archived).
CREATE OR REPLACE FUNCTION room_stats_room_changed()
RETURNS trigger AS $$
BEGIN
    INSERT INTO room_stats_deltas (room_id, kind, delta) VALUES (NEW.id, 'o', 0);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_room_stats_room_inserted
    AFTER INSERT ON rooms
    FOR EACH ROW EXECUTE FUNCTION room_stats_room_changed();
-- The message counter's updates name none of these columns: a chat post
-- does not fire this.
CREATE TRIGGER trigger_room_stats_room_updated
    AFTER UPDATE OF name, member_count, is_archived ON rooms
    FOR EACH ROW
    WHEN (OLD.name IS DISTINCT FROM NEW.name
          OR OLD.member_count IS DISTINCT FROM NEW.member_count
          OR OLD.is_archived IS DISTINCT FROM NEW.is_archived)
    EXECUTE FUNCTION room_stats_room_changed();

-- A deleted room leaves nothing behind (its rollup row goes by its foreign
-- key); this runs after the cascade has deleted its messages.
CREATE OR REPLACE FUNCTION room_stats_rooms_deleted()
RETURNS trigger AS $$
BEGIN
    DELETE FROM room_stats_deltas d USING old_rows o WHERE d.room_id = o.id;
    DELETE FROM room_stats_windows w USING old_rows o WHERE w.room_id = o.id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_room_stats_rooms_deleted
    AFTER DELETE ON rooms REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION room_stats_rooms_deleted();

-- Changes no row trigger sees (TRUNCATE, a dropped partition): the next
-- refresh rebuilds from scratch.
CREATE OR REPLACE FUNCTION room_stats_rollup_invalidate()
RETURNS void AS $$
BEGIN
    DELETE FROM room_stats_refresh;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION room_stats_truncated()
RETURNS trigger AS $$
BEGIN
    PERFORM room_stats_rollup_invalidate();
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_room_stats_messages_truncated AFTER TRUNCATE ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION room_stats_truncated();
CREATE TRIGGER trigger_room_stats_reactions_truncated AFTER TRUNCATE ON reactions
    FOR EACH STATEMENT EXECUTE FUNCTION room_stats_truncated();
CREATE TRIGGER trigger_room_stats_rooms_truncated AFTER TRUNCATE ON rooms
    FOR EACH STATEMENT EXECUTE FUNCTION room_stats_truncated();
CREATE TRIGGER trigger_room_stats_rollup_truncated AFTER TRUNCATE ON room_stats_rollup
    FOR EACH STATEMENT EXECUTE FUNCTION room_stats_truncated();

-- ---------------------------------------------------------------- refresh

-- From scratch, at the cost of migration 0003's refresh (the last 7 days of
-- messages, the last 24 h of reactions): on first use, and after an
-- invalidation. p_now is the instant the numbers are as of (NOW(), the
-- transaction's start, but for tests that move the clock). Returns the
-- number of rooms written.
CREATE OR REPLACE FUNCTION rebuild_room_stats_rollup(
    p_now timestamp with time zone DEFAULT now())
RETURNS integer AS $$
DECLARE
    v_rooms integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('room_stats_rollup'));
    -- TRUNCATE, not DELETE: it waits for every writer with uncommitted
    -- changes and holds new ones off until we commit, so no change is both
    -- counted below and left in the table for the next refresh.
    TRUNCATE room_stats_deltas, room_stats_windows;
    INSERT INTO room_stats_windows (room_id, kind, user_id, n)
    SELECT m.room_id, 'd', m.author_id, count(*) FROM messages m
    WHERE m.room_id IS NOT NULL AND NOT m.is_deleted
      AND m.created_at >= p_now - INTERVAL '24 hours'
    GROUP BY m.room_id, m.author_id
    UNION ALL
    SELECT m.room_id, 'w', 0, count(*) FROM messages m
    WHERE m.room_id IS NOT NULL AND NOT m.is_deleted
      AND m.created_at >= p_now - INTERVAL '7 days'
    GROUP BY m.room_id
    UNION ALL
    -- Each recent reaction looks its message up by primary key (OFFSET 0
    -- keeps the planner from scanning every message instead).
    SELECT m.room_id, 'r', react.user_id, count(*) FROM reactions react
    CROSS JOIN LATERAL (
        SELECT m.room_id FROM messages m
        WHERE m.id = react.message_id AND m.created_at = react.message_created_at
          AND m.room_id IS NOT NULL AND NOT m.is_deleted
        OFFSET 0
    ) m
    WHERE react.created_at >= p_now - INTERVAL '24 hours'
    GROUP BY m.room_id, react.user_id;
    DELETE FROM room_stats_rollup;
    SELECT room_stats_rollup_insert(ARRAY(SELECT id FROM rooms), p_now) INTO v_rooms;
    INSERT INTO room_stats_refresh (refreshed_now) VALUES (p_now)
    ON CONFLICT (singleton) DO UPDATE SET refreshed_now = EXCLUDED.refreshed_now;
    RETURN v_rooms;
END;
$$ LANGUAGE plpgsql;

-- The rollup rows of those of `p_rooms` that are not archived and have
-- none, from room_stats_windows; returns how many were written.
CREATE OR REPLACE FUNCTION room_stats_rollup_insert(
    p_rooms integer[], p_now timestamp with time zone)
RETURNS integer AS $$
DECLARE
    v_rooms integer;
BEGIN
    INSERT INTO room_stats_rollup AS s (
        room_id, name, member_count, total_messages, messages_24h, messages_7d,
        active_users_24h, last_message_at, reactions_24h, refreshed_at)
    SELECT r.id, r.name, r.member_count, r.message_count,
           COALESCE(w.messages_24h, 0), COALESCE(w.messages_7d, 0),
           COALESCE(w.active_users_24h, 0), room_stats_last_message_at(r.id),
           COALESCE(w.reactions_24h, 0), p_now
    FROM rooms r
    LEFT JOIN LATERAL (
        SELECT sum(n) FILTER (WHERE kind = 'd') AS messages_24h,
               sum(n) FILTER (WHERE kind = 'w') AS messages_7d,
               count(*) FILTER (WHERE kind = 'd') AS active_users_24h,
               count(*) FILTER (WHERE kind = 'r') AS reactions_24h
        FROM room_stats_windows WHERE room_id = r.id
    ) w ON TRUE
    WHERE r.id = ANY (p_rooms) AND NOT r.is_archived
      AND NOT EXISTS (SELECT 1 FROM room_stats_rollup x WHERE x.room_id = r.id);
    GET DIAGNOSTICS v_rooms = ROW_COUNT;
    RETURN v_rooms;
END;
$$ LANGUAGE plpgsql;

-- One index probe (idx_messages_active).
CREATE OR REPLACE FUNCTION room_stats_last_message_at(p_room integer)
RETURNS timestamp with time zone AS $$
    SELECT m.created_at FROM messages m
    WHERE m.room_id = p_room AND NOT m.is_deleted
    ORDER BY m.created_at DESC LIMIT 1
$$ LANGUAGE sql STABLE;

-- The refresh: the stored numbers, adjusted by what changed since the last
-- one. Same definitions as the seed's view (NOW() is the transaction's
-- start, as in REFRESH MATERIALIZED VIEW), so both give identical numbers
-- in one transaction; p_now as in rebuild_room_stats_rollup(). Returns the
-- number of rooms written (a room whose numbers did not change is not
-- rewritten).
DROP FUNCTION refresh_room_stats_rollup();  -- migration 0003's, without p_now
CREATE FUNCTION refresh_room_stats_rollup(p_now timestamp with time zone DEFAULT now())
RETURNS integer AS $$
DECLARE
    v_last timestamp with time zone;
    v_touched integer[];
    v_written integer;
    v_lo timestamp with time zone;
    v_hi timestamp with time zone;
    v_sign integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('room_stats_rollup'));
    SELECT refreshed_now INTO v_last FROM room_stats_refresh;
    IF v_last IS NULL THEN
        RETURN rebuild_room_stats_rollup(p_now);
    END IF;
    -- Rows between the two window starts left their window as the clock
    -- moved on (or came back in, if this transaction began before the last
    -- refresh's): `crossed` below.
    v_lo := least(v_last, p_now);
    v_hi := greatest(v_last, p_now);
    v_sign := CASE WHEN p_now >= v_last THEN -1 ELSE 1 END;
    -- One statement, so one snapshot: the changes consumed are exactly
    -- those the messages and reactions read here already show.
    WITH consumed AS (
        DELETE FROM room_stats_deltas RETURNING *
    ), changes AS (
        SELECT room_id, user_id, created_at, kind, delta FROM consumed WHERE kind <> 'x'
        UNION ALL
        -- A live message deleted outright took its reactions with it.
        SELECT gone.room_id, x.user_id, x.created_at, 'r', x.delta
        FROM consumed x
        JOIN (SELECT DISTINCT message_id, message_created_at, room_id FROM consumed
              WHERE kind = 'm' AND message_id IS NOT NULL) gone
          USING (message_id, message_created_at)
        WHERE x.kind = 'x'
    ), crossed AS (
        SELECT m.room_id, 'd' AS kind, m.author_id AS user_id, count(*) * v_sign AS n
        FROM messages m
        WHERE m.created_at >= v_lo - INTERVAL '24 hours'
          AND m.created_at < v_hi - INTERVAL '24 hours'
          AND m.room_id IS NOT NULL AND NOT m.is_deleted
        GROUP BY m.room_id, m.author_id
        UNION ALL
        SELECT m.room_id, 'w', 0, count(*) * v_sign
        FROM messages m
        WHERE m.created_at >= v_lo - INTERVAL '7 days'
          AND m.created_at < v_hi - INTERVAL '7 days'
          AND m.room_id IS NOT NULL AND NOT m.is_deleted
        GROUP BY m.room_id
        UNION ALL
        SELECT m.room_id, 'r', react.user_id, count(*) * v_sign
        FROM reactions react
        CROSS JOIN LATERAL (
            SELECT m.room_id FROM messages m
            WHERE m.id = react.message_id AND m.created_at = react.message_created_at
              AND m.room_id IS NOT NULL AND NOT m.is_deleted
            OFFSET 0
        ) m
        WHERE react.created_at >= v_lo - INTERVAL '24 hours'
          AND react.created_at < v_hi - INTERVAL '24 hours'
        GROUP BY m.room_id, react.user_id
    ), moved AS (
        -- A change counts in a window if its row was inside that window as
        -- of the last refresh (what crossed since is in `crossed`).
        SELECT room_id, 'd' AS kind, user_id, delta AS n FROM changes
        WHERE kind = 'm' AND created_at >= v_last - INTERVAL '24 hours'
        UNION ALL
        SELECT room_id, 'w', 0, delta FROM changes
        WHERE kind = 'm' AND created_at >= v_last - INTERVAL '7 days'
        UNION ALL
        SELECT room_id, 'r', user_id, delta FROM changes
        WHERE kind = 'r' AND created_at >= v_last - INTERVAL '24 hours'
        UNION ALL
        SELECT room_id, kind, user_id, n FROM crossed
    ), summed AS (
        SELECT room_id, kind, user_id, sum(n)::integer AS n FROM moved
        GROUP BY room_id, kind, user_id HAVING sum(n) <> 0
    ), windowed AS (
        -- One primary-key probe per changed count: the table grows with
        -- the day's traffic, the changes do not (OFFSET 0 keeps the planner
        -- from turning it into a hash join over the whole table).
        SELECT s.room_id, s.kind, s.user_id, s.n AS delta,
               COALESCE(w.n, 0) AS before, COALESCE(w.n, 0) + s.n AS after
        FROM summed s
        LEFT JOIN LATERAL (
            SELECT w.n FROM room_stats_windows w
            WHERE w.room_id = s.room_id AND w.kind = s.kind AND w.user_id = s.user_id
            OFFSET 0
        ) w ON TRUE
    ), kept AS (
        INSERT INTO room_stats_windows AS w (room_id, kind, user_id, n)
        SELECT room_id, kind, user_id, after FROM windowed WHERE after <> 0
        ON CONFLICT (room_id, kind, user_id) DO UPDATE SET n = EXCLUDED.n
    ), emptied AS (
        DELETE FROM room_stats_windows w USING windowed x
        WHERE x.after = 0
          AND w.room_id = x.room_id AND w.kind = x.kind AND w.user_id = x.user_id
    ), per_room AS (
        -- A user counts in a distinct count while their count is above 0.
        SELECT room_id,
               COALESCE(sum(delta) FILTER (WHERE kind = 'd'), 0) AS messages_24h,
               COALESCE(sum(delta) FILTER (WHERE kind = 'w'), 0) AS messages_7d,
               COALESCE(sum((after > 0)::int - (before > 0)::int) FILTER (WHERE kind = 'd'), 0)
                   AS active_users_24h,
               COALESCE(sum((after > 0)::int - (before > 0)::int) FILTER (WHERE kind = 'r'), 0)
                   AS reactions_24h
        FROM windowed GROUP BY room_id
    ), latest AS (
        SELECT room_id,
               max(created_at) FILTER (WHERE delta < 0) AS newest_gone,
               max(created_at) FILTER (WHERE delta > 0) AS newest
        FROM changes WHERE kind = 'm' GROUP BY room_id
    ), touched AS (
        SELECT room_id FROM per_room UNION SELECT room_id FROM latest
        UNION SELECT room_id FROM changes WHERE kind = 'o'
    ), fresh AS (
        -- last_message_at only moves forward, unless the message it was
        -- stopped counting: then one index probe.
        SELECT s.room_id, r.name, r.member_count, r.message_count AS total_messages,
               s.messages_24h + COALESCE(p.messages_24h, 0) AS messages_24h,
               s.messages_7d + COALESCE(p.messages_7d, 0) AS messages_7d,
               s.active_users_24h + COALESCE(p.active_users_24h, 0) AS active_users_24h,
               CASE WHEN l.newest_gone >= COALESCE(s.last_message_at, '-infinity')
                    THEN room_stats_last_message_at(s.room_id)
                    ELSE GREATEST(s.last_message_at, l.newest) END AS last_message_at,
               s.reactions_24h + COALESCE(p.reactions_24h, 0) AS reactions_24h
        FROM touched t
        JOIN room_stats_rollup s ON s.room_id = t.room_id
        JOIN rooms r ON r.id = t.room_id
        LEFT JOIN per_room p ON p.room_id = t.room_id
        LEFT JOIN latest l ON l.room_id = t.room_id
    ), written AS (
        UPDATE room_stats_rollup s SET
            name = f.name, member_count = f.member_count, total_messages = f.total_messages,
            messages_24h = f.messages_24h, messages_7d = f.messages_7d,
            active_users_24h = f.active_users_24h, last_message_at = f.last_message_at,
            reactions_24h = f.reactions_24h, refreshed_at = p_now
        FROM fresh f
        WHERE s.room_id = f.room_id
          AND (s.name, s.member_count, s.total_messages, s.messages_24h, s.messages_7d,
               s.active_users_24h, s.last_message_at, s.reactions_24h)
              IS DISTINCT FROM
              (f.name, f.member_count, f.total_messages, f.messages_24h, f.messages_7d,
               f.active_users_24h, f.last_message_at, f.reactions_24h)
        RETURNING 1
    )
    SELECT ARRAY(SELECT room_id FROM touched), (SELECT count(*) FROM written)
    INTO v_touched, v_written;
    -- Archived rooms leave the stats, as they leave the view; a room new or
    -- unarchived since gets its row from the windows (updated above).
    DELETE FROM room_stats_rollup s USING rooms r
    WHERE s.room_id = ANY (v_touched) AND r.id = s.room_id AND r.is_archived;
    v_written := v_written + room_stats_rollup_insert(v_touched, p_now);
    UPDATE room_stats_refresh SET refreshed_now = p_now;
    RETURN v_written;
END;
$$ LANGUAGE plpgsql;

-- Current from the moment the migration commits.
SELECT rebuild_room_stats_rollup();
