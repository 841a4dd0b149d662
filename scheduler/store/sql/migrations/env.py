"""Alembic environment: run by `SqlStore.start()`, which hands over an open connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from sx.scheduler.store.sql._tables import VERSION_TABLE, metadata


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "the store's migrations run through SqlStore.start(), which passes an open connection "
            "in Config.attributes['connection']"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; start the store instead")
_run_online()
