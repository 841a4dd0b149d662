"""`SqlStore`: the scheduler's store on SQLAlchemy 2 (async Core), for SQLite and PostgreSQL.

It is composed of one part per kind of record (``_access``, ``_jobs``, ``_instances``, ``_calendars``,
``_alarms``, ``_workflows``, ``_tasks``, ``_backfills``, ``_logs``), each a mixin over `SqlStoreBase`
(``_engine``: connections, transactions, migrations); ``_rows`` converts rows to records and
``_tables`` declares the schema.
"""

from __future__ import annotations

from sx.scheduler.store._interfaces import Store
from sx.scheduler.store.sql._access import SqlAccess
from sx.scheduler.store.sql._alarms import SqlAlarms
from sx.scheduler.store.sql._backfills import SqlBackfills
from sx.scheduler.store.sql._calendars import SqlCalendars
from sx.scheduler.store.sql._instances import SqlInstances
from sx.scheduler.store.sql._jobs import SqlJobs
from sx.scheduler.store.sql._leases import SqlLeases
from sx.scheduler.store.sql._logs import SqlInstanceLogs
from sx.scheduler.store.sql._tasks import SqlParallelTasks
from sx.scheduler.store.sql._workflows import SqlWorkflows

__all__ = ["SqlStore"]


class SqlStore(
    SqlAccess,
    SqlJobs,
    SqlInstances,
    SqlCalendars,
    SqlAlarms,
    SqlWorkflows,
    SqlParallelTasks,
    SqlBackfills,
    SqlLeases,
    SqlInstanceLogs,
    Store,
):
    """The scheduler's store on SQLite (``sqlite+aiosqlite:///path``) or PostgreSQL
    (``postgresql+asyncpg://...``); plain ``sqlite:///`` and ``postgresql://`` URLs get the async driver.

    ``await start()`` opens the pool and applies the migrations; ``await close()`` releases it. A
    scheduler's store is ``exclusive``: on a SQLite file it holds an OS lock from start to close, and
    a second exclusive store on the same file is refused with `InUseError` (PostgreSQL is shared).
    """
