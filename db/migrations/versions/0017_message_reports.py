"""Message reports: one per user and message, counted into messages.flag_count.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0017_message_reports.sql")


def downgrade() -> None:
    op.execute("DROP TABLE message_reports")
