"""Set-based DELETE/UPDATE of a table's matching rows, a bounded batch per
transaction, for the maintenance steps that need no per-row logic."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from db.engine import session_scope
from veza.maintenance.run import Run


def apply_in_batches(run: Run, key: str, table: str, where: str,
                     params: dict[str, Any] | None = None, set_clause: str | None = None) -> None:
    """DELETE (or UPDATE ... SET `set_clause`) the rows of `table` matching
    `where`, counting them under `key`. An UPDATE must make the rows stop
    matching `where`. Rows locked by someone else are left for next time
    (SKIP LOCKED): maintenance never waits on user traffic."""
    params = params or {}
    if run.dry_run:
        with session_scope() as session:
            count = session.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"), params)
            run.add(**{key: count.scalar_one()})
        return
    for size in run.batches(initial=1000):
        target = f"SELECT ctid FROM {table} WHERE {where} LIMIT :size FOR UPDATE SKIP LOCKED"
        statement = (
            f"UPDATE {table} SET {set_clause} WHERE ctid IN ({target})"
            if set_clause else f"DELETE FROM {table} WHERE ctid IN ({target})"
        )
        with session_scope() as session:
            done = session.execute(text(statement), {**params, "size": size}).rowcount
        run.add(**{key: done})
        if done < size:
            return


def keyset_batches(run: Run, query: str, params: dict[str, Any] | None = None,
                   initial: int = 500) -> Iterator[tuple[Session, Sequence[Row]]]:
    """The rows of `query`, a batch per transaction, in `id` order: the query
    selects `id`, filters on `id > :after` and ends `ORDER BY id LIMIT :size`.
    The caller's work on a batch commits with it."""
    after = 0
    for size in run.batches(initial):
        with session_scope() as session:
            rows = session.execute(text(query), {**(params or {}), "after": after, "size": size}).all()
            if not rows:
                return
            after = rows[-1].id
            yield session, rows
