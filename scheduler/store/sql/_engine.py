"""The plumbing every part of `SqlStore` shares: engines, connections, transactions, migrations.

SQLite (aiosqlite) is the embedded default: WAL journal, synchronous=NORMAL, foreign keys on, a busy
timeout, and writes serialized in-process and started with ``BEGIN IMMEDIATE`` so a read-then-write
transaction never dies on a lock upgrade. It is safe for one scheduler process, which an exclusive store
makes sure of (``_file_lock``: a second scheduler on the file is refused). On a SQLite file, short
look-ups run on a synchronous reader connection (``_sqlite_reader``) and hot write transactions whole
in a writer thread of their own (``_sqlite_writer``).

PostgreSQL (asyncpg) is for teams: several scheduler replicas may share it. Trigger claims are
compare-and-set updates, so a fire is claimed by exactly one replica; migrations run under an advisory
lock so replicas starting together do not race on the schema (``_connect``).

Hot paths use Core statements, never the ORM unit of work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sx.scheduler.store._records import Page
from sx.scheduler.store.sql._connect import create_store_engine, migrate
from sx.scheduler.store.sql._dialect import normalize_url
from sx.scheduler.store.sql._file_lock import FileLock
from sx.scheduler.store.sql._sqlite_reader import SqliteReader
from sx.scheduler.store.sql._sqlite_writer import SqliteWriter

__all__ = ["SqlStoreBase"]

_T = TypeVar("_T")

log = logging.getLogger("sx.scheduler.store")


class SqlStoreBase:
    """The connections of a store on SQLite or PostgreSQL, which every kind of record's part uses.

    ``_write()`` is one write transaction, ``_read()`` a connection for reads; ``_write_sync(work)`` runs
    a synchronous write transaction and ``_fetch``/``_fetch_one`` a short look-up, each the fastest way
    the backend allows.
    """

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        exclusive: bool = False,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self._url = normalize_url(url)
        self._echo = echo
        self.observe = observe
        """Told each read or write (``"read"``/``"write"``) and its seconds, for metrics."""
        self._engine: AsyncEngine | None = None
        self._write_engine: AsyncEngine | None = None
        self._is_sqlite = self._url.get_backend_name() == "sqlite"
        self._in_memory = self._is_sqlite and self._url.database in (None, "", ":memory:")
        # A scheduler's store holds its SQLite file alone from start to close; PostgreSQL is shared.
        self._file_lock: FileLock | None = None
        if exclusive and self._is_sqlite and not self._in_memory:
            assert self._url.database is not None
            self._file_lock = FileLock(Path(self._url.database).expanduser().resolve())
        # SQLite has one writer at a time: queue writers here rather than in the busy handler.
        # An in-memory database is one shared connection, so everything queues.
        self._write_lock = asyncio.Lock() if self._is_sqlite else None
        self._read_lock = self._write_lock if self._in_memory else None
        # SQLite file: short look-ups run on a plain synchronous connection in the caller's thread (see
        # _fetch). None on PostgreSQL and in-memory SQLite, and until started.
        self._sqlite_reader: SqliteReader | None = None
        # SQLite file: hot write transactions run whole on a synchronous connection in one thread of
        # their own (see _write_sync). None on PostgreSQL and in-memory SQLite, and until started.
        self._sqlite_writer: SqliteWriter | None = None

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._url.get_backend_name()

    @property
    def engine(self) -> AsyncEngine:
        """The started engine (for diagnostics and benchmarks; the store's methods are the API)."""
        if self._engine is None:
            raise RuntimeError("the store is not started: await store.start() first")
        return self._engine

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open connections and bring the schema up to date (Alembic migrations).

        An exclusive store on a SQLite file first locks it, or raises `InUseError` naming the holder.
        """
        if self._engine is not None:
            return
        if self._file_lock is not None:
            self._file_lock.acquire()
        try:
            await self._open()
        except BaseException:
            await self.close()  # releases the lock too
            raise

    async def _open(self) -> None:
        engine = create_store_engine(self._url, echo=self._echo, in_memory=self._in_memory)
        write_engine = engine.execution_options(sx_write=True) if self._is_sqlite else engine
        try:
            await migrate(write_engine, is_sqlite=self._is_sqlite)
        except BaseException:
            await engine.dispose()
            raise
        self._engine, self._write_engine = engine, write_engine
        if self._is_sqlite and not self._in_memory:
            assert self._write_lock is not None
            self._sqlite_reader = SqliteReader.open(self._url, echo=self._echo, observed=self._observed)
            self._sqlite_writer = SqliteWriter.open(self._url, echo=self._echo, write_lock=self._write_lock)
        log.debug("store started on %s", self.url)

    async def ping(self) -> None:
        """``SELECT 1`` on a pooled connection: proves the database answers now."""
        async with self._read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    @property
    def _sole_writer(self) -> bool:
        """Whether this store alone writes its database (a SQLite file it holds, or in memory): what
        it keeps in memory about its own writes stays true."""
        return self._is_sqlite and (self._file_lock is not None or self._in_memory)

    def _observed(self, kind: str, started: float) -> None:
        observe = self.observe
        if observe is not None:
            observe(kind, time.perf_counter() - started)

    async def close(self) -> None:
        engine, self._engine, self._write_engine = self._engine, None, None
        reader, self._sqlite_reader = self._sqlite_reader, None
        if reader is not None:
            reader.close()
        writer, self._sqlite_writer = self._sqlite_writer, None
        if writer is not None:
            await writer.close()
        if engine is not None:
            await engine.dispose()
        if self._file_lock is not None:
            self._file_lock.release()  # last: no connection of ours is left on the file

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- writes ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed on success."""
        engine = self._write_engine
        if engine is None:
            raise RuntimeError("the store is not started: await store.start() first")
        started = time.perf_counter()
        try:
            if self._write_lock is None:
                async with engine.begin() as conn:
                    yield conn
                return
            async with self._write_lock, engine.begin() as conn:
                yield conn
        finally:
            self._observed("write", started)

    async def _write_sync(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` (synchronous statements) as one write transaction, committed on success.

        On a SQLite file it runs in the writer thread (see ``_sqlite_writer``), in one transaction with
        the other works queued meanwhile (group commit); elsewhere on the async engine, through run_sync.
        """
        writer = self._sqlite_writer
        if writer is None:
            async with self._write() as conn:
                return await conn.run_sync(work)
        started = time.perf_counter()
        try:
            return await writer.run(work)
        finally:
            self._observed("write", started)

    def _insert(self, table: sa.Table) -> sqlite_dialect.Insert | pg_dialect.Insert:
        return sqlite_dialect.insert(table) if self._is_sqlite else pg_dialect.insert(table)

    # -- reads ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (one transaction, rolled back at the end)."""
        engine = self._engine
        if engine is None:
            raise RuntimeError("the store is not started: await store.start() first")
        started = time.perf_counter()
        try:
            if self._read_lock is None:
                async with engine.connect() as conn:
                    yield conn
                return
            async with self._read_lock, engine.connect() as conn:
                yield conn
        finally:
            self._observed("read", started)

    async def _fetch(
        self, statement: sa.Executable, params: dict[str, Any], *, direct: bool = False
    ) -> list[Any]:
        """All rows of a short, bounded read (a look-up by key): on a SQLite file on the synchronous
        reader (see ``_sqlite_reader``; ``direct`` for the hottest look-ups, on the driver's cursor)
        unless it cannot answer now, else on the asynchronous engine."""
        reader = self._sqlite_reader
        rows = reader.run(statement, params, direct=direct) if reader is not None else None
        if rows is not None:
            return rows
        async with self._read() as conn:
            return list((await conn.execute(statement, params)).all())

    async def _fetch_one(
        self, statement: sa.Executable, params: dict[str, Any], *, direct: bool = False
    ) -> Any | None:
        """The row of a short read of at most one row, or None."""
        rows = await self._fetch(statement, params, direct=direct)
        if len(rows) > 1:
            raise sa.exc.MultipleResultsFound("Multiple rows were found when one or none was required")
        return rows[0] if rows else None

    async def _read_page(
        self,
        table: sa.Table,
        where: Sequence[sa.ColumnElement[bool]],
        *,
        order_by: sa.ColumnElement[Any],
        offset: int,
        limit: int,
        record: Callable[[sa.Row[Any]], _T],
    ) -> Page[_T]:
        """One page of ``table``'s rows matching ``where`` as records, with the total count, read in one
        connection (the count and the page see the same rows)."""
        async with self._read() as conn:
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))
            ).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(table).where(*where).order_by(order_by).offset(offset).limit(limit)
                )
            ).all()
        return Page(items=[record(row) for row in rows], total=int(total))
