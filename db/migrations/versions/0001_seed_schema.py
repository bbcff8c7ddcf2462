"""The seed's data model, made to apply (docs/schema.md lists every change).

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0001_seed_schema.sql")


def downgrade() -> None:
    # Dropping a partitioned parent drops its partitions; CASCADE takes the
    # triggers, and functions that take a table's row type, with the tables.
    op.execute("DROP MATERIALIZED VIEW IF EXISTS room_stats")
    op.execute(
        "DROP TABLE IF EXISTS user_sessions, audit_logs, files, reactions, message_mentions, "
        "messages, direct_conversation_participants, direct_conversations, room_members, "
        "rooms, users CASCADE"
    )
    op.execute(
        "DROP FUNCTION IF EXISTS refresh_room_stats(), calculate_unread_count(integer, integer), "
        "update_room_stats(), sync_message_mentions(), manage_room_member_count(), "
        "create_monthly_partitions(regclass, date, integer)"
    )
    op.execute(
        "DROP TYPE IF EXISTS user_role, room_member_role, notification_level, "
        "message_content_type, moderation_status, file_processing_status, "
        "virus_scan_status, audit_severity"
    )
