-- Migration 0008: room bans, and instants the API can always read back.

-- --------------------------------------------------------------- bans
-- A kick bans its member from the room until banned_until: they cannot
-- rejoin or be invited back before then (api/rooms.py). banned_by_rank is
-- the rank the ban was issued with: lifting it early takes at least that
-- rank. An expired row is inert and is replaced or removed when the user
-- is banned again or rejoins.
CREATE TABLE room_bans (
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    banned_until TIMESTAMP WITH TIME ZONE NOT NULL,
    banned_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    banned_by_rank SMALLINT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id),
    CONSTRAINT valid_banned_until
        CHECK (banned_until BETWEEN '2000-01-01 00:00:00+00' AND '9999-01-01 00:00:00+00')
);
CREATE INDEX idx_room_bans_user ON room_bans(user_id);

-- ------------------------------------------------------ readable mutes
-- Before 0008 the API took any aware muted_until: a year-1 value in +14:00
-- was stored as 1 BC, which psycopg cannot read back, and every request
-- that loaded the membership failed. Repair such rows (a mute that ended
-- before 2000 has ended: lifted; one past 9999 never ends: until lifted),
-- then refuse them for good. The API's own bounds are narrower.
UPDATE room_members SET is_muted = false, muted_until = NULL
 WHERE muted_until < '2000-01-01 00:00:00+00';
UPDATE room_members SET muted_until = NULL WHERE muted_until > '9999-01-01 00:00:00+00';
DELETE FROM room_mutes WHERE muted_until < '2000-01-01 00:00:00+00';
UPDATE room_mutes SET muted_until = NULL WHERE muted_until > '9999-01-01 00:00:00+00';
ALTER TABLE room_members ADD CONSTRAINT valid_muted_until
    CHECK (muted_until BETWEEN '2000-01-01 00:00:00+00' AND '9999-01-01 00:00:00+00');
ALTER TABLE room_mutes ADD CONSTRAINT valid_muted_until
    CHECK (muted_until BETWEEN '2000-01-01 00:00:00+00' AND '9999-01-01 00:00:00+00');
