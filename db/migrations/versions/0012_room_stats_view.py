"""The seed's room_stats as a view over the maintained rollup, so that it
is current (it was a materialized view nothing refreshed).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from alembic import op

from db.migrations.sqlfile import run_sql_file, seed_section

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0012_room_stats_view.sql")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS room_stats")
    op.execute("DROP INDEX IF EXISTS idx_room_stats_rollup_messages_24h")
    op.execute("DROP INDEX IF EXISTS idx_room_stats_rollup_active_users")
    # The seed's materialized view, its indexes and its refresh function, as
    # the seed wrote them (taken from its file, not copied here).
    op.execute(seed_section("CREATE MATERIALIZED VIEW room_stats", "$$ LANGUAGE plpgsql;"))
    op.execute("REFRESH MATERIALIZED VIEW room_stats")
