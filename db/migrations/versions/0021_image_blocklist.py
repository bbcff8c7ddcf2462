"""The moderation blocklist of images, by perceptual hash.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0021_image_blocklist.sql")


def downgrade() -> None:
    op.execute("DROP TABLE image_blocklist")
