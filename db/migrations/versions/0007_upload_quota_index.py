"""Upload quotas: an index on files(uploaded_by, created_at).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0007_upload_quota_index.sql")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_files_uploader_created")
