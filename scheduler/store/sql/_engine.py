"""The plumbing every part of `SqlStore` shares: engines, connections, transactions, migrations.

SQLite (aiosqlite) is the embedded default: WAL journal, synchronous=NORMAL, foreign keys on, a busy
timeout, and writes serialized in-process and started with ``BEGIN IMMEDIATE`` so a read-then-write
transaction never dies on a lock upgrade. It is safe for one scheduler process, which an exclusive store
makes sure of (``_file_lock``: a second scheduler on the file is refused). On a SQLite file, short
look-ups run on a synchronous reader connection (`SqlStoreBase._fetch`) and hot write transactions
whole in a writer thread of their own (`SqlStoreBase._write_sync`).

PostgreSQL (asyncpg) is for teams: several scheduler replicas may share it. Trigger claims are
compare-and-set updates, so a fire is claimed by exactly one replica; migrations run under an advisory
lock so replicas starting together do not race on the schema.

Hot paths use Core statements, never the ORM unit of work.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from sx.scheduler.store._records import Page
from sx.scheduler.store.sql._direct import direct_select
from sx.scheduler.store.sql._file_lock import FileLock

__all__ = ["SqlStoreBase", "is_foreign_key_violation", "normalize_url", "sqlite_url", "sqlstate"]

_T = TypeVar("_T")

log = logging.getLogger("sx.scheduler.store")

_MIGRATIONS: Final = Path(__file__).parent / "migrations"
_SQLITE_FILE: Final = "scheduler.db"
# One key for every sx scheduler: replicas starting at once take turns to migrate.
_MIGRATION_LOCK_KEY: Final = 0x5358_5343_4844  # "SXSCHD"
_SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# Writes committed together at most (group commit on a SQLite file): bounds one transaction's time.
_GROUP_LIMIT: Final = 256
# A transaction of ours never waits on its own process for long: our statements follow one another. One
# that does is a paused or stalled replica's, and its row locks (the lease row a fenced write shares)
# would hold the other replicas' take-over of its groups until it woke; the server ends it instead.
_PG_IDLE_IN_TRANSACTION_MS: Final = 5000


def sqlite_url(data_dir: Path) -> str:
    """The embedded store's URL: a SQLite file ``scheduler.db`` in ``data_dir``."""
    path = Path(data_dir).expanduser().resolve() / _SQLITE_FILE
    return URL.create("sqlite+aiosqlite", database=str(path)).render_as_string(hide_password=False)


def normalize_url(url: str) -> URL:
    """Parse a store URL and pick the async driver: ``sqlite://`` and ``postgresql://`` are accepted."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"url={url!r}: not a database URL ({exc})") from None
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+aiosqlite"):
        return parsed.set(drivername="sqlite+aiosqlite")
    if driver in ("postgresql", "postgres", "postgresql+asyncpg"):
        return parsed.set(drivername="postgresql+asyncpg")
    shown = parsed.render_as_string(hide_password=True)
    raise ValueError(
        f"url={shown!r}: unsupported database {driver!r}; use sqlite+aiosqlite:///<path> "
        "or postgresql+asyncpg://user@host/db"
    )


def sqlstate(exc: DBAPIError) -> str | None:
    for candidate in (exc.orig, getattr(exc.orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_foreign_key_violation(exc: IntegrityError) -> bool:
    return sqlstate(exc) == "23503" or "foreign key" in str(exc.orig).lower()


def _upgrade(connection: Connection) -> None:
    config = Config()
    # Config values go through configparser interpolation: a literal % must be doubled.
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@dataclass(slots=True)
class _QueuedWrite:
    """A write transaction's work waiting for the writer thread, and its caller's future."""

    work: Callable[[Connection], Any]
    outcome: asyncio.Future[Any]
    started: bool = False


class SqlStoreBase:
    """The connections of a store on SQLite or PostgreSQL, which every kind of record's part uses.

    ``_write()`` is one write transaction, ``_read()`` a connection for reads; ``_write_sync(work)`` runs
    a synchronous write transaction and ``_fetch``/``_fetch_one`` a short look-up, each the fastest way
    the backend allows.
    """

    def __init__(self, url: str, *, echo: bool = False, exclusive: bool = False) -> None:
        self._url = normalize_url(url)
        self._echo = echo
        self.observe: Callable[[str, float], None] | None = None
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
        self._reader_engine: sa.Engine | None = None
        self._reader: Connection | None = None
        # SQLite file: hot write transactions run whole on a synchronous connection in one thread of
        # their own (see _write_sync). None on PostgreSQL and in-memory SQLite, and until started.
        self._writer_engine: sa.Engine | None = None
        self._writer: Connection | None = None
        self._writer_thread: concurrent.futures.ThreadPoolExecutor | None = None
        # Writes waiting for the writer thread, and the task that runs them (see _write_in_thread).
        self._queued_writes: collections.deque[_QueuedWrite] = collections.deque()
        self._committer: asyncio.Task[None] | None = None

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
        engine = self._create_engine()
        write_engine = engine.execution_options(sx_write=True) if self._is_sqlite else engine
        try:
            async with write_engine.begin() as conn:
                if not self._is_sqlite:
                    await conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                await conn.run_sync(_upgrade)
        except BaseException:
            await engine.dispose()
            raise
        self._engine, self._write_engine = engine, write_engine
        if self._is_sqlite and not self._in_memory:
            self._open_reader()
            self._open_writer()
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
        self._close_reader()
        await self._close_writer()
        if engine is not None:
            await engine.dispose()
        if self._file_lock is not None:
            self._file_lock.release()  # last: no connection of ours is left on the file

    def _sync_engine(self, pragmas: Sequence[str]) -> sa.Engine:
        """A one-connection synchronous engine on this SQLite file, in driver autocommit, with
        ``pragmas`` run on connect (for the reader and the writer thread)."""
        engine = sa.create_engine(
            self._url.set(drivername="sqlite+pysqlite"),
            echo=self._echo,
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

    def _open_reader(self) -> None:
        """The synchronous read-only connection for short SQLite look-ups.

        Through aiosqlite a one-row SELECT costs about half a millisecond of CPU: the statement goes to
        the driver's thread and back several times (cursor, execute, fetch, close, rollback on return).
        The same SELECT on a plain sqlite3 connection takes some tens of microseconds, less than those
        thread hops alone, so blocking the event loop for it costs less than not blocking it. Only
        bounded look-ups (by primary key or a unique or selective index) use it; scans and writes keep
        the asynchronous engine. In WAL mode a reader never waits on the writer; if it ever meets a
        lock (busy timeout 0: it never sleeps in the loop), the look-up goes the asynchronous way.
        """
        # Autocommit (isolation_level None): each SELECT sees the latest commit.
        engine = self._sync_engine(("PRAGMA query_only=ON", "PRAGMA busy_timeout=0"))
        try:
            self._reader = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except BaseException:
            engine.dispose()
            raise
        self._reader_engine = engine

    def _open_writer(self) -> None:
        """The synchronous connection and thread for hot SQLite write transactions.

        Through aiosqlite one INSERT transaction goes to the driver's thread and back some seven times
        (BEGIN, cursor, execute, fetch, close, COMMIT); here the whole transaction is one trip to a
        thread that runs it on a plain sqlite3 connection. Writers still queue on the write lock first,
        so the two ways of writing never contend in-process.
        """
        # Autocommit at the driver: _transaction emits BEGIN IMMEDIATE itself.
        engine = self._sync_engine(
            (
                "PRAGMA foreign_keys=ON",
                f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}",
                "PRAGMA synchronous=NORMAL",
            )
        )
        try:
            self._writer = engine.connect()
        except BaseException:
            engine.dispose()
            raise
        self._writer_engine = engine
        self._writer_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sx-sqlite-write")

    async def _close_writer(self) -> None:
        writer, engine, thread = self._writer, self._writer_engine, self._writer_thread
        self._writer = self._writer_engine = self._writer_thread = None
        if thread is not None:
            # Let a transaction still running finish before its connection closes.
            await asyncio.get_running_loop().run_in_executor(thread, lambda: None)
            thread.shutdown(wait=False)
        if writer is not None:
            writer.close()
        if engine is not None:
            engine.dispose()

    @staticmethod
    def _transaction(conn: Connection, works: list[Callable[[Connection], Any]]) -> list[tuple[bool, Any]]:
        # Runs in the writer thread: one SQLite write transaction for several callers' works, each in a
        # savepoint of its own when there are several, so one that fails leaves the others' writes. The
        # outcomes are (True, result) or (False, exception); an error outside the works (BEGIN, COMMIT,
        # a savepoint) raises, and the whole transaction is rolled back.
        outcomes: list[tuple[bool, Any]] = []
        with conn.begin():
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            if len(works) == 1:
                return [(True, works[0](conn))]
            for work in works:
                conn.exec_driver_sql("SAVEPOINT sx_write")
                try:
                    result = work(conn)
                except Exception as exc:
                    conn.exec_driver_sql("ROLLBACK TO sx_write")
                    conn.exec_driver_sql("RELEASE sx_write")
                    outcomes.append((False, exc))
                else:
                    conn.exec_driver_sql("RELEASE sx_write")
                    outcomes.append((True, result))
        return outcomes

    async def _write_sync(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` (synchronous statements) as one write transaction, committed on success.

        On a SQLite file it runs in the writer thread (see _open_writer), in one transaction with the
        other works queued meanwhile (group commit); elsewhere on the async engine, through run_sync.
        """
        if self._writer is None or self._write_lock is None:
            async with self._write() as conn:
                return await conn.run_sync(work)
        started = time.perf_counter()
        try:
            return await self._write_in_thread(work)
        finally:
            self._observed("write", started)

    async def _write_in_thread(self, work: Callable[[Connection], _T]) -> _T:
        queued = _QueuedWrite(work, asyncio.get_running_loop().create_future())
        self._queued_writes.append(queued)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued(), name="sx-sqlite-commit")
        try:
            result: _T = await asyncio.shield(queued.outcome)
            return result
        except asyncio.CancelledError:
            if queued.started:
                # A cancelled caller does not stop a transaction under way: wait until it has ended.
                await asyncio.wait([queued.outcome])
            else:
                queued.outcome.cancel()  # not started: it never will
            raise

    async def _commit_queued(self) -> None:
        """Run the queued writes, as many as are queued (up to _GROUP_LIMIT) per transaction."""
        assert self._write_lock is not None
        queue = self._queued_writes
        while queue:
            async with self._write_lock:
                group: list[_QueuedWrite] = []
                while queue and len(group) < _GROUP_LIMIT:
                    queued = queue.popleft()
                    if not queued.outcome.cancelled():
                        queued.started = True
                        group.append(queued)
                if not group:
                    continue
                writer, thread = self._writer, self._writer_thread
                try:
                    if writer is None or thread is None:
                        raise RuntimeError("the store is not started: await store.start() first")
                    works = [queued.work for queued in group]
                    outcomes = await asyncio.get_running_loop().run_in_executor(
                        thread, self._transaction, writer, works
                    )
                except Exception as exc:
                    outcomes = [(False, exc)] * len(group)
                for queued, (ok, value) in zip(group, outcomes, strict=True):
                    if queued.outcome.done():
                        continue
                    if ok:
                        queued.outcome.set_result(value)
                    else:
                        queued.outcome.set_exception(value)

    def _close_reader(self) -> None:
        reader, engine = self._reader, self._reader_engine
        self._reader = self._reader_engine = None
        if reader is not None:
            reader.close()
        if engine is not None:
            engine.dispose()

    def _run_inline(
        self, statement: sa.Executable, params: dict[str, Any], *, direct: bool = False
    ) -> list[Any] | None:
        """The rows of a short read on the synchronous reader; None when it cannot answer now. With
        ``direct`` (a module-level SELECT without expanding parameters), on the driver's cursor."""
        reader = self._reader
        if reader is None:
            return None
        started = time.perf_counter()
        try:
            if direct:
                assert isinstance(statement, sa.Select)
                rows: list[Any] = direct_select(statement, reader.dialect).run(reader, params)
            else:
                rows = list(reader.execute(statement, params).all())
            self._observed("read", started)
            return rows
        except OperationalError as exc:
            # A lock (e.g. WAL recovery) or a closed connection: the asynchronous engine retries.
            log.debug("inline read fell back to the async engine: %s", exc)
            with contextlib.suppress(DBAPIError):
                reader.rollback()
            return None

    async def _fetch(
        self, statement: sa.Executable, params: dict[str, Any], *, direct: bool = False
    ) -> list[Any]:
        """All rows of a short, bounded read (a look-up by key): see _open_reader. ``direct``: see
        _run_inline (for the hottest look-ups)."""
        rows = self._run_inline(statement, params, direct=direct)
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _create_engine(self) -> AsyncEngine:
        if not self._is_sqlite:
            return create_async_engine(
                self._url,
                echo=self._echo,
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,
                pool_recycle=1800,
                connect_args={
                    "server_settings": {
                        "idle_in_transaction_session_timeout": str(_PG_IDLE_IN_TRANSACTION_MS)
                    }
                },
            )
        if self._in_memory:
            engine = create_async_engine(self._url, echo=self._echo, poolclass=StaticPool)
        else:
            assert self._url.database is not None
            Path(self._url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # WAL readers never block on the writer; a few connections cover concurrent reads.
            engine = create_async_engine(self._url, echo=self._echo, pool_size=5, max_overflow=5)
        in_memory = self._in_memory

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control from the driver: we emit BEGIN ourselves (see _on_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            pragmas = ["PRAGMA foreign_keys=ON", f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}"]
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

    def _insert(self, table: sa.Table) -> sqlite_dialect.Insert | pg_dialect.Insert:
        return sqlite_dialect.insert(table) if self._is_sqlite else pg_dialect.insert(table)
