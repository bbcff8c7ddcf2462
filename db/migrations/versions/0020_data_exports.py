"""Data exports: a row per export a user asked for.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0020_data_exports.sql")


def downgrade() -> None:
    op.execute("DROP TABLE data_exports")
