-- Migration 0022: bulk deletes fix their own counters (issue 17).
--
-- The counter triggers (0001's trigger_update_room_stats, 0004's
-- trigger_reactions_count) update a room's row, a parent's thread_count or a
-- message's reaction_count once per deleted row. For a chat delete that is
-- what it costs; for the retention purge it was most of the purge: a batch of
-- 5,000 messages in one room updated that room's row 5,000 times, and each
-- cascaded reaction locked and recounted a message that was being deleted.
--
-- So a transaction may take the counters over for its DELETEs:
--
--     SELECT set_config('veza.bulk_counters', 'on', true)   -- SET LOCAL
--
-- and the DELETE triggers then stand aside for the rest of that transaction
-- only; it must fix every counter itself, by the totals of what it removed
-- (veza/messages/counters.py, REMOVED_MESSAGE_COUNTERS; the purge reads them
-- from DELETE ... RETURNING, so a row a chat session deleted or soft-deleted
-- first is not subtracted twice). Every other session, and every INSERT and
-- UPDATE, keeps the per-row triggers: a concurrent chat post in the same room
-- still counts itself. The setting is transaction-scoped (set_config's
-- is_local), so it cannot leak to the next transaction on a pooled connection.
--
-- Why a setting the triggers honour rather than statement-level triggers
-- with transition tables: the reactions a purge removes go by the foreign
-- key's ON DELETE CASCADE, which runs one DELETE statement per deleted
-- message, so a statement-level reaction trigger would still fire once per
-- message; a transition table would also change the cost and the locking of
-- every chat delete (the reaction trigger's lock-then-recount is what keeps
-- concurrent reactions exact). The WHEN clause is evaluated before the
-- trigger is queued: a silenced row costs one current_setting() call.
--
-- The INSERT/UPDATE halves are unchanged, and split from the DELETE halves
-- so that the setting cannot silence an insert (a restore, a backfill).
-- trigger_manage_room_member_count is left alone: no bulk delete removes
-- room_members rows.

DROP TRIGGER trigger_update_room_stats ON messages;

CREATE TRIGGER trigger_update_room_stats
    AFTER INSERT OR UPDATE OF is_deleted ON messages
    FOR EACH ROW
    EXECUTE FUNCTION update_room_stats();

CREATE TRIGGER trigger_update_room_stats_delete
    AFTER DELETE ON messages
    FOR EACH ROW
    WHEN (current_setting('veza.bulk_counters', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION update_room_stats();

DROP TRIGGER trigger_reactions_count ON reactions;

CREATE TRIGGER trigger_reactions_count
    AFTER INSERT ON reactions
    FOR EACH ROW EXECUTE FUNCTION update_message_reaction_count();

CREATE TRIGGER trigger_reactions_count_delete
    AFTER DELETE ON reactions
    FOR EACH ROW
    WHEN (current_setting('veza.bulk_counters', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION update_message_reaction_count();
