-- Migration 0014: what the enrichment of a message (messages.index, after
-- each post and edit: veza/messages/enrichment.py) adds beside the seed's
-- columns. The rest of it goes where the seed put it: metadata
-- (language_detected, code_snippets, client, version) and
-- referenced_message_ids.
--
-- rendered_html: the content as HTML for clients (CommonMark, raw HTML off,
--   sanitised), NULL until the message is enriched.
-- enriched_at: when the content as it is now was enriched; NULL while a
--   post or an edit waits for it (the API says "pending").
-- The archive has the live table's columns (migration 0003).
ALTER TABLE messages ADD COLUMN rendered_html TEXT, ADD COLUMN enriched_at TIMESTAMP WITH TIME ZONE;
ALTER TABLE archived_messages
    ADD COLUMN rendered_html TEXT, ADD COLUMN enriched_at TIMESTAMP WITH TIME ZONE;
