-- Migration 0015: full-text search in each message's own language.
--
-- The seed's idx_messages_search stems every message as French
-- (to_tsvector('french', content)); it stays, for whoever queries it so.
-- Search (GET /api/v1/search/messages) stems each message in the language
-- its enrichment detected: messages.index writes search_config (the text
-- search configuration of that language, 'simple' when unknown) and
-- search_vector (to_tsvector(search_config, content)), and one GIN index
-- over the vectors serves every language: a search asks for the query
-- stemmed in each configuration at once (veza/messages/search.py).
-- A message has no vector until it is enriched (seconds after its post);
-- the archive has the live table's columns (migration 0003).
ALTER TABLE messages ADD COLUMN search_config regconfig, ADD COLUMN search_vector tsvector;
ALTER TABLE archived_messages ADD COLUMN search_config regconfig, ADD COLUMN search_vector tsvector;
CREATE INDEX idx_messages_search_vector ON messages USING gin (search_vector);
