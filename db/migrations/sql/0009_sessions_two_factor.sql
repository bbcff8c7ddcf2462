-- Sessions, passwords and 2FA (docs/schema.md, "0009"; docs/api.md, "Auth
-- choices"): session families with an absolute lifetime, case-insensitive
-- usernames, and room for an encrypted TOTP secret and its replay guard.

-- ------------------------------------------------------- session families
-- A login starts a family; every refresh of it adds rows to the same
-- family and keeps the login's time, so that refreshing never extends a
-- family past SESSION_ABSOLUTE_LIFETIME_DAYS, and a reused refresh token
-- revokes the whole family at once. Rows from before: a login made an
-- access row and a refresh row whose access_token_jti is the access row's
-- id, so that id names the pair's family; their creation is their login.
ALTER TABLE user_sessions
    ADD COLUMN family_id UUID,
    ADD COLUMN authenticated_at TIMESTAMP WITH TIME ZONE;
UPDATE user_sessions
   SET family_id = coalesce(access_token_jti, id), authenticated_at = created_at;
-- A row written by anything else than the API (a script, a test) is a
-- family of its own, logged in when it is written.
ALTER TABLE user_sessions
    ALTER COLUMN family_id SET DEFAULT gen_random_uuid(),
    ALTER COLUMN family_id SET NOT NULL,
    ALTER COLUMN authenticated_at SET DEFAULT now(),
    ALTER COLUMN authenticated_at SET NOT NULL;
CREATE INDEX idx_user_sessions_family ON user_sessions(family_id);

-- ------------------------------------------------ case-insensitive names
-- "Alice" and "alice" are one account. Existing names that differ only in
-- case would make the index fail with a bare duplicate-key error; name
-- them instead, so that an operator knows which accounts to rename.
DO $$
DECLARE
    clashes text;
BEGIN
    SELECT string_agg(names, '; ') INTO clashes FROM (
        SELECT string_agg(username, ', ' ORDER BY id) AS names
          FROM users GROUP BY lower(username) HAVING count(*) > 1
    ) dup;
    IF clashes IS NOT NULL THEN
        RAISE EXCEPTION 'usernames differing only in case must be renamed first: %', clashes;
    END IF;
END
$$;
CREATE UNIQUE INDEX idx_users_username_lower ON users (lower(username));

-- ---------------------------------------------------------------- 2FA
-- totp_secret holds a Fernet token (about 140 characters for a 32-character
-- base32 secret), never the secret itself; totp_last_step is the time
-- step of the last TOTP code accepted, so that a code is used only once.
ALTER TABLE users
    ALTER COLUMN totp_secret TYPE TEXT,
    ADD COLUMN totp_last_step BIGINT;
