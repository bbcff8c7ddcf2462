"""room_stats, refreshed from a rollup (refresh_room_stats_rollup(),
migration 0023) at a cost that follows what changed since the last refresh:
the seed's materialized view read every message ever written on each
refresh. The seed's room_stats is a view over the rollup (migration 0012),
so this refresh is the one that keeps it current. `rooms` is the number of
rollup rows written (a room whose numbers did not change is not)."""

from __future__ import annotations

from sqlalchemy import text

from db.engine import session_scope
from veza.maintenance.run import Run


def refresh(run: Run) -> None:
    with session_scope() as session:
        if run.dry_run:
            rooms = session.execute(text("SELECT count(*) FROM rooms WHERE NOT is_archived"))
        else:
            rooms = session.execute(text("SELECT refresh_room_stats_rollup()"))
        run.add(rooms=rooms.scalar_one())
