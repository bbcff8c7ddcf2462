"""Outbox re-drive: finished_at, the relay's claim lease, re-drives and dead rows.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0006_outbox_redrive.sql")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_outbox_finished_at")
    op.execute("DROP INDEX IF EXISTS idx_outbox_unfinished")
    op.execute(
        "CREATE INDEX IF NOT EXISTS idx_outbox_sent_at ON outbox(sent_at) WHERE sent_at IS NOT NULL"
    )
    op.execute(
        "ALTER TABLE outbox DROP COLUMN IF EXISTS finished_at,"
        " DROP COLUMN IF EXISTS claimed_until, DROP COLUMN IF EXISTS redrives,"
        " DROP COLUMN IF EXISTS dead_at, DROP COLUMN IF EXISTS dead_reason"
    )
