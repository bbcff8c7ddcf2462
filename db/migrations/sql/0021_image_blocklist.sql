-- Migration 0021: the moderation blocklist of images, by perceptual hash
-- (veza/files/blocklist.py; operators manage it with
-- `veza moderation blocklist add|remove|list`). An upload whose image is
-- within PDQ_MATCH_THRESHOLD bits of an entry, in any of its eight
-- rotations and flips, is held for review with its message.
CREATE TABLE image_blocklist (
    id SERIAL PRIMARY KEY,
    -- Meta's PDQ hash: 256 bits, written and read as 64 hex digits in
    -- PDQ's own order (what ThreatExchange's hash lists hold).
    pdq BIT(256) NOT NULL UNIQUE,
    label VARCHAR(200),
    -- Who added it: the operator's login on the machine that ran the command.
    added_by VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
