"""API integrity: session and email indexes, reaction_count trigger, room_mutes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0004_api_integrity.sql")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS room_mutes")
    op.execute("DROP TRIGGER IF EXISTS trigger_reactions_count ON reactions")
    op.execute("DROP FUNCTION IF EXISTS update_message_reaction_count()")
    op.execute("DROP INDEX IF EXISTS idx_users_email_lower")
    op.execute("DROP INDEX IF EXISTS idx_user_sessions_access_token_jti")
