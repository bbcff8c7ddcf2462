"""DM attachments: files.conversation_id.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0018_dm_files.sql")


def downgrade() -> None:
    op.execute("ALTER TABLE archived_files DROP COLUMN conversation_id")
    # Drops its index and files_location_check with it.
    op.execute("ALTER TABLE files DROP COLUMN conversation_id")
