"""Indexes for the exporter's failure metrics: failed files, and the
maintenance runs that re-drove work.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0011_failure_metrics.sql")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_maintenance_runs_redrives")
    op.execute("DROP FUNCTION IF EXISTS maintenance_redrives(jsonb)")
    op.execute("DROP INDEX IF EXISTS idx_files_failed")
