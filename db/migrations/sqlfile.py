"""Migrations whose upgrade is a reviewed SQL file under db/migrations/sql/."""

from pathlib import Path

import psycopg
from alembic import op

SQL_DIR = Path(__file__).parent / "sql"


def run_sql_file(name: str) -> None:
    # Straight to psycopg with no parameters, on the migration's own
    # connection and transaction, so that the file's % and : characters
    # (regexes, casts) are never taken for placeholders.
    driver = op.get_bind().connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise RuntimeError(f"migrations run on psycopg 3, not on {type(driver).__name__}")
    driver.execute((SQL_DIR / name).read_text())


def sql_section(name: str, start: str, end: str) -> str:
    """The SQL of file `name` from the first `start` to the first `end`
    after it, inclusive: what a downgrade puts back, as it was written."""
    text = (SQL_DIR / name).read_text()
    begin = text.index(start)
    return text[begin : text.index(end, begin) + len(end)]


def seed_section(start: str, end: str) -> str:
    """The seed's SQL from the first `start` to the first `end` after it."""
    return sql_section("0001_seed_schema.sql", start, end)
