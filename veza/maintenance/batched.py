"""A table's rows, a bounded batch per transaction, for the maintenance
steps: every transaction stays short, sized by the run (Run.batches), and
a loop the phase's time budget cuts short is resumed by the next run.

- `apply_in_batches`: a set-based DELETE/UPDATE of the matching rows, for
  the steps that need no per-row logic;
- `KeysetBatches`: the rows of a query in the order of a key (an id, or
  (created_at, id)), handed to the caller inside their transaction, for
  the steps that do."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from psycopg import sql
from sqlalchemy import Row
from sqlalchemy.orm import Session

from db.engine import affected, session_scope
from veza.maintenance.run import Run
from veza.statements import compose, identifiers


def apply_in_batches(
    run: Run,
    key: str,
    table: str,
    where: str,
    params: dict[str, Any] | None = None,
    set_clause: str | None = None,
    row_id: Sequence[str] = ("ctid",),
) -> None:
    """DELETE (or UPDATE ... SET `set_clause`) the rows of `table` matching
    `where`, counting them under `key`. An UPDATE must make the rows stop
    matching `where`. Rows locked by someone else are left for next time
    (SKIP LOCKED): maintenance never waits on user traffic. `row_id` names
    a row: its ctid in a plain table, but a partitioned table's key (a
    ctid is only unique within one partition, so `ctid IN (...)` over
    `messages` would also hit other months' rows at the same place)."""
    params = params or {}
    parts = {"table": sql.Identifier(table), "where": sql.SQL(where), "row_id": identifiers(row_id)}
    if run.dry_run:
        with session_scope() as session:
            count = session.execute(
                compose("SELECT count(*) FROM {table} WHERE {where}", **parts), params
            )
            run.add(**{key: count.scalar_one()})
        return
    target = sql.SQL(
        "SELECT {row_id} FROM {table} WHERE {where} LIMIT :size FOR UPDATE SKIP LOCKED"
    )
    parts["target"] = target.format(**parts)
    statement = (
        compose(
            "UPDATE {table} SET {set_clause} WHERE ({row_id}) IN ({target})",
            set_clause=sql.SQL(set_clause),
            **parts,
        )
        if set_clause
        else compose("DELETE FROM {table} WHERE ({row_id}) IN ({target})", **parts)
    )
    for size in run.batches(initial=1000):
        with session_scope() as session:
            done = affected(session.execute(statement, {**params, "size": size}))
        run.add(**{key: done})
        if done < size:
            return


class KeysetBatches:
    """The rows of `query`, a batch per transaction, in the order of `key`
    (column names, qualified as `f.id` where the query needs it): each batch
    starts after the last row of the one before. `query` selects the key's
    columns and is a template: `{after}` where its WHERE clause is to say
    "after the last batch", `{key}` for its ORDER BY, `:size` its LIMIT, and
    any other `{name}` filled from `parts` (psycopg.sql). Iterating yields
    `(session, rows)`: the caller's work on a batch commits with it.
    `descending` walks the key from its largest value down (newest first,
    for a key that grows with time).

    The loop ends when a batch comes back empty (`exhausted`) or when the
    run's phase is out of time (Run.batches); the caller reports which, and
    the next run resumes what is left."""

    def __init__(
        self,
        run: Run,
        query: str,
        params: dict[str, Any] | None = None,
        key: Sequence[str] = ("id",),
        initial: int = 500,
        descending: bool = False,
        **parts: sql.Composable,
    ) -> None:
        self.run, self.params, self.initial = run, params or {}, initial
        self.columns = [column.split(".")[-1] for column in key]
        columns = [sql.Identifier(*column.split(".")) for column in key]
        direction = sql.SQL(" DESC" if descending else "")
        beyond = sql.SQL("<" if descending else ">")
        order = sql.SQL(", ").join(column + direction for column in columns)
        last = sql.SQL(", ").join(sql.SQL(f":after_{i}") for i in range(len(key)))
        after = sql.SQL("({}) {} ({})").format(sql.SQL(", ").join(columns), beyond, last)
        self.first = compose(query, after=sql.SQL("true"), key=order, **parts)
        self.rest = compose(query, after=after, key=order, **parts)
        self.exhausted = False

    def __iter__(self) -> Iterator[tuple[Session, Sequence[Row[Any]]]]:
        statement = self.first
        after: dict[str, Any] = {}  # the first batch has nothing before it
        for size in self.run.batches(self.initial):
            with session_scope() as session:
                rows = session.execute(statement, {**self.params, **after, "size": size}).all()
                if not rows:
                    self.exhausted = True
                    return
                statement = self.rest
                last = rows[-1]._mapping
                after = {f"after_{i}": last[column] for i, column in enumerate(self.columns)}
                yield session, rows
