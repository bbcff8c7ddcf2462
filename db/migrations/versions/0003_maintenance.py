"""Maintenance: retention archive tables and the room_stats rollup.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0003_maintenance.sql")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS refresh_room_stats_rollup()")
    op.execute(
        "DROP TABLE IF EXISTS room_stats_rollup, archived_reply_links, archived_files, "
        "archived_reactions, archived_messages"
    )
