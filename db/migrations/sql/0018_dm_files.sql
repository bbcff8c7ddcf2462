-- Migration 0018: a file can belong to a direct conversation
-- (POST /api/v1/conversations/{id}/files), as the seed's room_id makes it
-- belong to a room.
--
-- conversation_id: the DM the file was uploaded to. An upload attached to
-- no message is readable by the DM's two participants through it (an
-- attachment follows its message). A file is in a room, in a DM, or (older
-- rows) in neither, never in both (files_location_check). It cascades as
-- room_id does: a conversation that goes takes its files' rows, and the
-- orphan sweep their bytes.
-- The archive has the live table's columns (migration 0003); DMs have no
-- retention, so no archived row ever carries one, but the copy is by name.
ALTER TABLE files
    ADD COLUMN conversation_id INTEGER REFERENCES direct_conversations(id) ON DELETE CASCADE,
    ADD CONSTRAINT files_location_check CHECK (room_id IS NULL OR conversation_id IS NULL);
CREATE INDEX idx_files_conversation ON files(conversation_id) WHERE conversation_id IS NOT NULL;
ALTER TABLE archived_files ADD COLUMN conversation_id INTEGER;
