-- Migration 0013: GET /rooms lists rooms by last activity, newest first, a
-- room nobody has written in yet by its creation (api/rooms.py). The seed's
-- idx_rooms_activity is on last_activity_at alone, whose NULLs (rooms
-- without a message) sort first when it is read backwards; this index is
-- that order itself, with the id that breaks ties, for keyset pages over
-- the rooms that are not archived.
CREATE INDEX idx_rooms_discovery
    ON rooms ((COALESCE(last_activity_at, created_at)) DESC, id DESC)
    WHERE is_archived = false;
