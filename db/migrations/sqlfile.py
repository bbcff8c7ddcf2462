"""Migrations whose upgrade is a reviewed SQL file under db/migrations/sql/."""

from pathlib import Path

from alembic import op

SQL_DIR = Path(__file__).parent / "sql"


def run_sql_file(name: str) -> None:
    # Straight to psycopg with no parameters, on the migration's own
    # connection and transaction, so that the file's % and : characters
    # (regexes, casts) are never taken for placeholders.
    op.get_bind().connection.driver_connection.execute((SQL_DIR / name).read_text())
