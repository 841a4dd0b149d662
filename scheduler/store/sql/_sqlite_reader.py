"""`SqliteReader`: the synchronous read-only connection on which a SQLite file's short look-ups run.

Through aiosqlite a one-row SELECT costs about half a millisecond of CPU: the statement goes to the
driver's thread and back several times (cursor, execute, fetch, close, rollback on return). The same
SELECT on a plain sqlite3 connection takes some tens of microseconds, less than those thread hops alone,
so blocking the event loop for it costs less than not blocking it. Only bounded look-ups (by primary key
or a unique or selective index) use it; scans and writes keep the asynchronous engine. In WAL mode a
reader never waits on the writer; if it ever meets a lock (busy timeout 0: it never sleeps in the loop),
the look-up goes the asynchronous way.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from sx.scheduler.store.sql._connect import sync_sqlite_engine
from sx.scheduler.store.sql._direct import direct_select

__all__ = ["SqliteReader"]

log = logging.getLogger("sx.scheduler.store")


class SqliteReader:
    """A SQLite file's synchronous reader connection, in autocommit: each SELECT sees the latest commit.

    ``observed(kind, started)`` is told each read it answers (``"read"`` and its ``perf_counter`` start).
    """

    def __init__(self, engine: sa.Engine, connection: Connection, observed: Callable[[str, float], None]):
        self._engine: sa.Engine | None = engine
        self._connection: Connection | None = connection
        self._observed = observed

    @classmethod
    def open(cls, url: URL, *, echo: bool, observed: Callable[[str, float], None]) -> SqliteReader:
        """Open the reader on the SQLite file of ``url``."""
        # Autocommit (isolation_level None): each SELECT sees the latest commit.
        engine = sync_sqlite_engine(url, echo=echo, pragmas=("PRAGMA query_only=ON", "PRAGMA busy_timeout=0"))
        try:
            connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, connection, observed)

    def close(self) -> None:
        reader, engine = self._connection, self._engine
        self._connection = self._engine = None
        if reader is not None:
            reader.close()
        if engine is not None:
            engine.dispose()

    def run(
        self, statement: sa.Executable, params: dict[str, Any], *, direct: bool = False
    ) -> list[Any] | None:
        """The rows of a short read; None when it cannot answer now. With ``direct`` (a module-level
        SELECT without expanding parameters), on the driver's cursor."""
        reader = self._connection
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
