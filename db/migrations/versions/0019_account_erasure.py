"""The account lifecycle: when a deleted account's erasure finished.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0019_account_erasure.sql")


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN erased_at")  # its index goes with it
