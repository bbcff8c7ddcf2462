"""room_stats refreshed from what changed since the last refresh (deltas
written by statement triggers, and the rows the clock moved out of the
windows), not from the last week of traffic.

Revision ID: 0023
Revises: 0021
Create Date: 2026-12-08
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file, sql_section

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

TRIGGERS = {
    "messages": (
        "trigger_room_stats_messages_inserted",
        "trigger_room_stats_messages_deleted",
        "trigger_room_stats_message_updated",
        "trigger_room_stats_messages_truncated",
    ),
    "reactions": (
        "trigger_room_stats_reactions_inserted",
        "trigger_room_stats_reactions_deleted",
        "trigger_room_stats_reactions_truncated",
    ),
    "rooms": (
        "trigger_room_stats_room_inserted",
        "trigger_room_stats_room_updated",
        "trigger_room_stats_rooms_deleted",
        "trigger_room_stats_rooms_truncated",
    ),
    "room_stats_rollup": ("trigger_room_stats_rollup_truncated",),
}

FUNCTIONS = (
    "room_stats_messages_written()",
    "room_stats_message_updated()",
    "room_stats_message_counts(messages, smallint)",
    "room_stats_reactions_written()",
    "room_stats_room_changed()",
    "room_stats_rooms_deleted()",
    "room_stats_truncated()",
    "room_stats_rollup_invalidate()",
    "rebuild_room_stats_rollup(timestamp with time zone)",
    "room_stats_rollup_insert(integer[], timestamp with time zone)",
    "room_stats_last_message_at(integer)",
)


def upgrade() -> None:
    run_sql_file("0023_room_stats_deltas.sql")


def downgrade() -> None:
    for table, triggers in TRIGGERS.items():
        for trigger in triggers:
            op.execute(f"DROP TRIGGER {trigger} ON {table}")
    # Migration 0003's refresh, as it was written there.
    op.execute("DROP FUNCTION refresh_room_stats_rollup(timestamp with time zone)")
    op.execute(
        sql_section(
            "0003_maintenance.sql",
            "CREATE OR REPLACE FUNCTION refresh_room_stats_rollup()",
            "$$ LANGUAGE plpgsql;",
        )
    )
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")
    op.execute("DROP TABLE room_stats_deltas, room_stats_windows, room_stats_refresh")
    op.execute("SELECT refresh_room_stats_rollup()")
