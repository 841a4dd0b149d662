"""Running the store's migrations on a connection, as tests of one migration do."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from sx.scheduler.store.sql._connect import _MIGRATIONS

__all__ = ["migrate"]


def migrate(connection: Connection, action: str, revision: str) -> None:
    """``action`` ("upgrade" or "downgrade") the schema on ``connection`` to ``revision``."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)
