"""Alembic environment: the database is DATABASE_URL, the target is db.models."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, Engine

from db.engine import database_url, get_engine, set_kind
from db.models import Base
from db.partitions import include_object

config = context.config
set_kind("maintenance")  # a migration's statements may be long (db/engine.py)
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=Base.metadata,
        include_object=include_object,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # A connection a program passed in (config.attributes), else our engine.
    connectable: Connection | Engine = config.attributes.get("connection") or get_engine(
        config.get_main_option("sqlalchemy.url") or database_url()
    )
    if isinstance(connectable, Engine):
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=include_object,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
