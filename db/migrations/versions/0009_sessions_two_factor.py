"""Session families and their login time, case-insensitive usernames, room
for an encrypted TOTP secret and the last TOTP step used.

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0009_sessions_two_factor.sql")


def downgrade() -> None:
    # A secret that no longer fits VARCHAR(32) is an encrypted one: without
    # the application's key it is of no use to the old schema, so 2FA is
    # turned off for those users rather than failing the downgrade.
    op.execute(
        "UPDATE users SET totp_secret = NULL, totp_enabled = false, backup_codes = NULL"
        " WHERE length(totp_secret) > 32"
    )
    op.execute(
        "ALTER TABLE users DROP COLUMN IF EXISTS totp_last_step,"
        " ALTER COLUMN totp_secret TYPE VARCHAR(32)"
    )
    op.execute("DROP INDEX IF EXISTS idx_users_username_lower")
    op.execute("DROP INDEX IF EXISTS idx_user_sessions_family")
    op.execute(
        "ALTER TABLE user_sessions DROP COLUMN IF EXISTS family_id,"
        " DROP COLUMN IF EXISTS authenticated_at"
    )
