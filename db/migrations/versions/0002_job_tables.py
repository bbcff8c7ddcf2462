"""Our own job state: the transactional outbox and the maintenance run log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0002_job_tables.sql")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS maintenance_runs, outbox")
    op.execute("DROP FUNCTION IF EXISTS notify_outbox()")
