"""Bulk deletes fix their own counters: the DELETE counter triggers stand
aside in a transaction that sets veza.bulk_counters (the retention purge).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0022_bulk_counters.sql")


def downgrade() -> None:
    op.execute("DROP TRIGGER trigger_update_room_stats_delete ON messages")
    op.execute("DROP TRIGGER trigger_update_room_stats ON messages")
    op.execute(
        "CREATE TRIGGER trigger_update_room_stats"
        " AFTER INSERT OR DELETE OR UPDATE OF is_deleted ON messages"
        " FOR EACH ROW EXECUTE FUNCTION update_room_stats()"
    )
    op.execute("DROP TRIGGER trigger_reactions_count_delete ON reactions")
    op.execute("DROP TRIGGER trigger_reactions_count ON reactions")
    op.execute(
        "CREATE TRIGGER trigger_reactions_count AFTER INSERT OR DELETE ON reactions"
        " FOR EACH ROW EXECUTE FUNCTION update_message_reaction_count()"
    )
