-- Migration 0019: the account lifecycle (veza/accounts/erasure.py). A user
-- who deletes their account gets deleted_at (the seed's column) at once, and
-- is erased by maintenance.erase_deleted_accounts after
-- ACCOUNT_DELETE_GRACE_DAYS; erased_at says that erasure finished (the row
-- stays, anonymised, for the references to it).
ALTER TABLE users ADD COLUMN erased_at TIMESTAMP WITH TIME ZONE;
-- The erasure's due list: deleted and not yet erased.
CREATE INDEX idx_users_erasure_due ON users(deleted_at)
    WHERE deleted_at IS NOT NULL AND erased_at IS NULL;
