"""An index in the order GET /rooms lists rooms: last activity, newest first.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0013_rooms_discovery.sql")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_rooms_discovery")
