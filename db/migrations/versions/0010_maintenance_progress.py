"""A maintenance run's live progress and cancel request; outcomes
`dry_run` and `cancelled`.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0010_maintenance_progress.sql")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_maintenance_runs_status")
    # The old schema knows neither outcome: a dry run was `succeeded`, and a
    # cancelled run is the nearest to `failed` (it did not finish).
    op.execute("UPDATE maintenance_runs SET status = 'succeeded' WHERE status = 'dry_run'")
    op.execute(
        "UPDATE maintenance_runs SET status = 'failed', error = 'cancelled'"
        " WHERE status = 'cancelled'"
    )
    op.execute(
        "ALTER TABLE maintenance_runs DROP CONSTRAINT valid_run_status,"
        " ADD CONSTRAINT valid_run_status"
        " CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),"
        " DROP COLUMN phase, DROP COLUMN progress, DROP COLUMN progress_at,"
        " DROP COLUMN cancel_requested_at, DROP COLUMN cancel_requested_by"
    )
