"""Message enrichment: the rendered HTML and when the content was enriched.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0014_message_enrichment.sql")


def downgrade() -> None:
    for table in ("archived_messages", "messages"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN rendered_html, DROP COLUMN enriched_at")
