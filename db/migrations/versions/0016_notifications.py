"""Notifications: a row per recipient and message, and the user's email
choice.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0016_notifications.sql")


def downgrade() -> None:
    op.execute("DROP TABLE notifications")
    op.execute("DROP TYPE notification_kind")
    op.execute(
        "ALTER TABLE users DROP COLUMN email_notifications, DROP COLUMN notification_email_at"
    )
