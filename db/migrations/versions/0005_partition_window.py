"""Partitions for the past as well as the future.

Migration 0001 premade only this month and three ahead, so a fresh database
refused a row dated yesterday on the 1st of a month (a backfill, an import,
rows written by an older deployment). This makes the whole window of
db/partitions.py: PARTITION_MONTHS_BEHIND months back (by default enough
for the longest room retention, at least 2) to PARTITION_MONTHS_AHEAD
ahead. maintenance.ensure_partitions keeps it made from then on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

from db.partitions import ensure_monthly_partitions

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ensure_monthly_partitions(op.get_bind())


def downgrade() -> None:
    # The partitions hold rows by then; they go with their tables (0001).
    pass
