"""SQL statements with names in them, composed by psycopg.sql for
SQLAlchemy's `text()`.

A table, partition or column name goes in as an `Identifier` (quoted by
psycopg, whatever it holds), a fragment of our own SQL as `SQL`; values
never go into the text: they stay `:name` bound parameters. This is the
idiom of Zulip's retention, and psycopg composes without a connection, so
the statement can be built once, at import time if need be.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql
from sqlalchemy import TextClause, text


def compose(template: str, **parts: sql.Composable) -> TextClause:
    """`template` with each `{name}` filled by the part of that name."""
    return text(sql.SQL(template).format(**parts).as_string())


def identifiers(names: Iterable[str], alias: str | None = None) -> sql.Composed:
    """A comma-separated list of column names, each qualified by `alias`
    when given."""
    qualifier = (alias,) if alias else ()
    return sql.SQL(", ").join(sql.Identifier(*qualifier, name) for name in names)
