-- API integrity: indexes for hot lookups, case-insensitive email
-- uniqueness, an exact messages.reaction_count, and mutes that outlive a
-- membership (docs/schema.md, "0004").

-- ------------------------------------------------------------- indexes
-- Closing a session by its access token's jti (refresh, logout) was a scan.
CREATE INDEX idx_user_sessions_access_token_jti ON user_sessions(access_token_jti)
    WHERE access_token_jti IS NOT NULL;

-- Login and register match emails case-insensitively; two accounts whose
-- emails differ only in case would make a login ambiguous.
CREATE UNIQUE INDEX idx_users_email_lower ON users (lower(email));

-- -------------------------------------------------- reaction_count trigger
-- Like the other counters, reaction_count is kept by the database, so that
-- every path that adds or removes reactions (the API, a deleted user's
-- cascade, the retention archive and its restore) keeps it exact.
-- The message row is locked first, then the count is taken in a new
-- statement (a new snapshot under READ COMMITTED), so concurrent reactions
-- to one message cannot lose a count; and a recount, not +1/-1, so rows
-- that arrive with their count already set (a restore from the archive)
-- are not counted twice. When the message itself is being deleted the
-- UPDATE finds no row and does nothing.
CREATE OR REPLACE FUNCTION update_message_reaction_count()
RETURNS TRIGGER AS $$
DECLARE
    target reactions%ROWTYPE;
BEGIN
    IF TG_OP = 'INSERT' THEN
        target := NEW;
    ELSE
        target := OLD;
    END IF;
    PERFORM 1 FROM messages
     WHERE id = target.message_id AND created_at = target.message_created_at
       FOR UPDATE;
    UPDATE messages
       SET reaction_count = (SELECT count(*) FROM reactions r
                              WHERE r.message_id = target.message_id
                                AND r.message_created_at = target.message_created_at)
     WHERE id = target.message_id AND created_at = target.message_created_at;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_reactions_count
    AFTER INSERT OR DELETE ON reactions
    FOR EACH ROW EXECUTE FUNCTION update_message_reaction_count();

-- --------------------------------------------------------------- mutes
-- A mute in force when its member leaves or is kicked, applied again when
-- they rejoin, so that leaving and rejoining does not lift a mute.
CREATE TABLE room_mutes (
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    muted_until TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX idx_room_mutes_user ON room_mutes(user_id);
