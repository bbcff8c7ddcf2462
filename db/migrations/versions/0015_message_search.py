"""Full-text search in each message's detected language: its text search
configuration and vector, and a GIN index over the vectors.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0015_message_search.sql")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_messages_search_vector")
    for table in ("archived_messages", "messages"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN search_config, DROP COLUMN search_vector")
