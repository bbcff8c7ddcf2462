-- Migration 0012: the seed's room_stats, current.
--
-- The seed's room_stats was a materialized view that nothing refreshed in
-- production (beat refreshed room_stats_rollup, migration 0003), so whoever
-- queried it as the seed documents got an empty or stale answer. Its
-- refresh reads every message and reaction ever written (11-13x the
-- rollup's cost at 1M messages, docs/benchmarks.md), which is why the
-- rollup exists. room_stats is now a plain view over the rollup, under the
-- same name and columns: it is as current as the last
-- maintenance.refresh_room_stats (every 5 minutes), its numbers are the
-- seed's definition (tests/test_maintenance_housekeeping.py checks them
-- against the seed's query), and the API's stats, which read the rollup,
-- agree with it by construction.

DROP MATERIALIZED VIEW room_stats;  -- and its three indexes

CREATE VIEW room_stats AS
SELECT room_id, name, member_count, total_messages, messages_24h, messages_7d,
       active_users_24h, last_message_at, reactions_24h
FROM room_stats_rollup;

-- The seed's indexes, on the table behind the view: one row per room is
-- the rollup's primary key; the busiest rooms first are these two.
CREATE INDEX idx_room_stats_rollup_messages_24h ON room_stats_rollup(messages_24h DESC);
CREATE INDEX idx_room_stats_rollup_active_users ON room_stats_rollup(active_users_24h DESC);

-- The seed's function keeps its name and its meaning (bring room_stats up
-- to date), at the rollup's cost.
CREATE OR REPLACE FUNCTION refresh_room_stats()
RETURNS void AS $$
BEGIN
    PERFORM refresh_room_stats_rollup();
END;
$$ LANGUAGE plpgsql;

-- Current from the moment the migration commits.
SELECT refresh_room_stats_rollup();
