"""Room bans; muted_until repaired and bounded to instants Python reads back.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0008_room_bans.sql")


def downgrade() -> None:
    # The repaired mutes stay repaired: their old values were unreadable.
    op.execute("ALTER TABLE room_mutes DROP CONSTRAINT IF EXISTS valid_muted_until")
    op.execute("ALTER TABLE room_members DROP CONSTRAINT IF EXISTS valid_muted_until")
    op.execute("DROP TABLE IF EXISTS room_bans")
