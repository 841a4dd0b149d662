"""Opening the store's engines and migrating its schema.

The asynchronous engine of each backend: SQLite (aiosqlite) with its pragmas (WAL journal,
synchronous=NORMAL, foreign keys on, a busy timeout) and ``BEGIN IMMEDIATE`` for writers; PostgreSQL
(asyncpg) with a pool and a server-side limit on idle transactions. The synchronous one-connection
engines of a SQLite file (its reader and its writer thread). And the Alembic migrations, which on
PostgreSQL run under an advisory lock so replicas starting together do not race on the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "create_store_engine", "migrate", "sync_sqlite_engine"]

_MIGRATIONS: Final = Path(__file__).parent / "migrations"
# One key for every sx scheduler: replicas starting at once take turns to migrate.
_MIGRATION_LOCK_KEY: Final = 0x5358_5343_4844  # "SXSCHD"
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# A transaction of ours never waits on its own process for long: our statements follow one another. One
# that does is a paused or stalled replica's, and its row locks (the lease row a fenced write shares)
# would hold the other replicas' take-over of its groups until it woke; the server ends it instead.
_PG_IDLE_IN_TRANSACTION_MS: Final = 5000


def _upgrade(connection: Connection) -> None:
    config = Config()
    # Config values go through configparser interpolation: a literal % must be doubled.
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(write_engine: AsyncEngine, *, is_sqlite: bool) -> None:
    """Bring the schema up to date (Alembic migrations) in one write transaction; on PostgreSQL under
    the migration advisory lock."""
    async with write_engine.begin() as conn:
        if not is_sqlite:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        await conn.run_sync(_upgrade)


def create_store_engine(url: URL, *, echo: bool, in_memory: bool) -> AsyncEngine:
    """The store's asynchronous engine on ``url`` (already normalized: see ``_dialect.normalize_url``)."""
    if url.get_backend_name() != "sqlite":
        return create_async_engine(
            url,
            echo=echo,
            pool_size=10,
            max_overflow=20,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={
                "server_settings": {"idle_in_transaction_session_timeout": str(_PG_IDLE_IN_TRANSACTION_MS)}
            },
        )
    if in_memory:
        engine = create_async_engine(url, echo=echo, poolclass=StaticPool)
    else:
        assert url.database is not None
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # WAL readers never block on the writer; a few connections cover concurrent reads.
        engine = create_async_engine(url, echo=echo, pool_size=5, max_overflow=5)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver: we emit BEGIN ourselves (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        pragmas = ["PRAGMA foreign_keys=ON", f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"]
        if not in_memory:
            pragmas += ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"]
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front, so a transaction that reads first and then
        # writes cannot fail on a lock upgrade (which the busy timeout does not cover).
        # Reads run in autocommit (no BEGIN/ROLLBACK round trips through the driver's thread);
        # the few multi-statement reads tolerate a commit landing between their statements.
        if conn.get_execution_options().get("sx_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def sync_sqlite_engine(url: URL, *, echo: bool, pragmas: Sequence[str]) -> sa.Engine:
    """A one-connection synchronous engine on the SQLite file of ``url``, in driver autocommit, with
    ``pragmas`` run on connect (for the reader and the writer thread)."""
    engine = sa.create_engine(
        url.set(drivername="sqlite+pysqlite"),
        echo=echo,
        poolclass=StaticPool,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    return engine
