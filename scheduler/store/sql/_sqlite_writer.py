"""`SqliteWriter`: a SQLite file's hot write transactions, run whole in a thread of their own, with the
writes queued meanwhile committed together (group commit).

Through aiosqlite one INSERT transaction goes to the driver's thread and back some seven times (BEGIN,
cursor, execute, fetch, close, COMMIT); here the whole transaction is one trip to a thread that runs it
on a plain sqlite3 connection. Writers still queue on the store's write lock first, so the two ways of
writing never contend in-process.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from sx.scheduler.store.sql._connect import SQLITE_BUSY_TIMEOUT_MS, sync_sqlite_engine

__all__ = ["SqliteWriter"]

_T = TypeVar("_T")

# Writes committed together at most (group commit on a SQLite file): bounds one transaction's time.
_GROUP_LIMIT: Final = 256


@dataclass(slots=True)
class _QueuedWrite:
    """A write transaction's work waiting for the writer thread, and its caller's future."""

    work: Callable[[Connection], Any]
    outcome: asyncio.Future[Any]
    started: bool = False


class SqliteWriter:
    """The synchronous writer connection of a SQLite file, its thread, and the writes queued for it.

    ``write_lock`` is the store's: a group of writes holds it while it runs, as the asynchronous
    engine's writers do.
    """

    def __init__(
        self,
        engine: sa.Engine,
        connection: Connection,
        thread: concurrent.futures.ThreadPoolExecutor,
        write_lock: asyncio.Lock,
    ) -> None:
        self._engine: sa.Engine | None = engine
        self._writer: Connection | None = connection
        self._thread: concurrent.futures.ThreadPoolExecutor | None = thread
        self._write_lock = write_lock
        # Writes waiting for the writer thread, and the task that runs them (see run).
        self._queued_writes: collections.deque[_QueuedWrite] = collections.deque()
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, url: URL, *, echo: bool, write_lock: asyncio.Lock) -> SqliteWriter:
        """Open the writer connection and thread on the SQLite file of ``url``."""
        # Autocommit at the driver: _transaction emits BEGIN IMMEDIATE itself.
        engine = sync_sqlite_engine(
            url,
            echo=echo,
            pragmas=(
                "PRAGMA foreign_keys=ON",
                f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                "PRAGMA synchronous=NORMAL",
            ),
        )
        try:
            connection = engine.connect()
        except BaseException:
            engine.dispose()
            raise
        thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sx-sqlite-write")
        return cls(engine, connection, thread, write_lock)

    async def close(self) -> None:
        writer, engine, thread = self._writer, self._engine, self._thread
        self._writer = self._engine = self._thread = None
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

    async def run(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` in the writer thread, in one transaction with the other works queued meanwhile."""
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
                writer, thread = self._writer, self._thread
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
