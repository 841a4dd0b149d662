"""`SqlStore`: the scheduler's store on SQLAlchemy 2 (async Core), for SQLite and PostgreSQL.

SQLite (aiosqlite) is the embedded default: WAL journal, synchronous=NORMAL, foreign keys on, a busy
timeout, and writes serialized in-process and started with ``BEGIN IMMEDIATE`` so a read-then-write
transaction never dies on a lock upgrade. It is safe for one scheduler process.

PostgreSQL (asyncpg) is for teams: several scheduler replicas may share it. Trigger claims are
compare-and-set updates, so a fire is claimed by exactly one replica; migrations run under an advisory
lock so replicas starting together do not race on the schema.

Hot paths use Core statements, never the ORM unit of work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
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

from sx.processors._enums import ACTIVE_INSTANCE_STATUSES, InstanceStatus, TaskStatus, TimeType, TriggerType
from sx.processors._schedule import Schedule
from sx.processors._spec import JobSpec
from sx.scheduler.store._store import (
    AccessKey,
    Alarm,
    Calendar,
    DuplicateError,
    Fire,
    Group,
    Instance,
    InstanceChange,
    Job,
    Namespace,
    NewInstance,
    NewTask,
    NewWorkflowInstance,
    NotFoundError,
    Page,
    Store,
    StoreError,
    Task,
    TaskStatusChange,
    Workflow,
    WorkflowDef,
    WorkflowFire,
    WorkflowInstance,
    WorkflowNode,
)
from sx.scheduler.store.sql import _tables as tables
from sx.scheduler.store.sql._tables import JOB_CAN_FIRE, UtcDateTime

__all__ = ["SqlStore", "normalize_url", "sqlite_url"]

_T = TypeVar("_T")

log = logging.getLogger("sx.scheduler.store")

_MIGRATIONS: Final = Path(__file__).parent / "migrations"
_SQLITE_FILE: Final = "scheduler.db"
_FINISHED: Final = tuple(s for s in InstanceStatus if s.finished)
# One key for every sx scheduler: replicas starting at once take turns to migrate.
_MIGRATION_LOCK_KEY: Final = 0x5358_5343_4844  # "SXSCHD"
_ID_CHUNK: Final = 5000  # ids per IN (...): well under both backends' parameter limits
_CLAIM_ATTEMPTS: Final = 3
_RETRYABLE_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_NONCE_PURGE_INTERVAL: Final = 60.0
_SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# has_access_keys is asked on every OpenAPI request: its answer is kept this long (seconds), and
# dropped at once when this store creates or deletes a key, so other processes' changes show soon.
ACCESS_KEYS_CACHE_SECONDS: Final = 1.0

# -- hot statements, built once ----------------------------------------------------------------------
# Building a statement per call costs more than running it: a new statement object has to be walked
# again for its compiled-cache key. These are built once and bound per call.
_t_ns, _t_groups, _t_keys = tables.namespaces, tables.groups, tables.access_keys
_t_jobs, _t_instances = tables.jobs, tables.instances
_GET_NAMESPACE: Final = sa.select(_t_ns).where(_t_ns.c.id == sa.bindparam("b_id"))
_GET_GROUP: Final = sa.select(_t_groups).where(
    _t_groups.c.namespace == sa.bindparam("b_namespace"), _t_groups.c.group_id == sa.bindparam("b_group")
)
# The namespace and its group in one look-up: no row, no namespace; a row of NULL group columns, no group.
_GET_NAMESPACE_GROUP: Final = (
    sa.select(
        _t_ns.c.id.label("ns_id"),
        _t_ns.c.name.label("ns_name"),
        _t_ns.c.description.label("ns_description"),
        _t_ns.c.created_at.label("ns_created_at"),
        _t_groups.c.group_id,
        _t_groups.c.app_key,
        _t_groups.c.description,
        _t_groups.c.created_at,
    )
    .select_from(
        _t_ns.outerjoin(
            _t_groups,
            sa.and_(_t_groups.c.namespace == _t_ns.c.id, _t_groups.c.group_id == sa.bindparam("b_group")),
        )
    )
    .where(_t_ns.c.id == sa.bindparam("b_namespace"))
)
_GET_ACCESS_KEY: Final = sa.select(_t_keys).where(_t_keys.c.key_id == sa.bindparam("b_id"))
_ANY_ACCESS_KEY: Final = sa.select(_t_keys.c.key_id).limit(1)
_GET_JOB: Final = sa.select(_t_jobs).where(_t_jobs.c.id == sa.bindparam("b_id"))
_FIND_JOB: Final = sa.select(_t_jobs).where(
    _t_jobs.c.namespace == sa.bindparam("b_namespace"),
    _t_jobs.c.group_id == sa.bindparam("b_group"),
    _t_jobs.c.name == sa.bindparam("b_name"),
)
_GET_INSTANCE: Final = sa.select(_t_instances).where(_t_instances.c.id == sa.bindparam("b_id"))
_COUNT_ACTIVE: Final = (
    sa.select(sa.func.count())
    .select_from(_t_instances)
    .where(
        _t_instances.c.job_id == sa.bindparam("b_job_id"),
        _t_instances.c.status.in_([int(s) for s in ACTIVE_INSTANCE_STATUSES]),
    )
)
_INSERT_INSTANCE: Final = sa.insert(_t_instances).returning(_t_instances.c.id)
_STATUS_IN: Final = _t_instances.c.status.in_(sa.bindparam("b_statuses", expanding=True))
_GET_INSTANCE_IF: Final = _GET_INSTANCE.where(_STATUS_IN)
# The SET clause is the columns named in the parameters.
_UPDATE_INSTANCE: Final = (
    sa.update(_t_instances).where(_t_instances.c.id == sa.bindparam("b_id")).returning(*_t_instances.c)
)
_UPDATE_INSTANCE_IF: Final = _UPDATE_INSTANCE.where(_STATUS_IN)
_INSERT_JOB: Final = sa.insert(_t_jobs).returning(_t_jobs.c.id)


_CHANGE_FIELDS: Final = (
    "status",
    "start_time",
    "end_time",
    "worker_id",
    "worker_addr",
    "executor",
    "result",
    "progress",
    "timeout_alarmed",
)


def _instance_change_params(
    instance_id: int, change: InstanceChange, only_if_status: Sequence[InstanceStatus] | None
) -> dict[str, Any]:
    """The bind parameters of _UPDATE_INSTANCE(_IF) for one change: the id, the guard, the set fields."""
    params: dict[str, Any] = {"b_id": instance_id}
    if only_if_status is not None:
        params["b_statuses"] = [int(s) for s in only_if_status]
    for name in _CHANGE_FIELDS:
        value = getattr(change, name)
        if value is not None:
            if isinstance(value, datetime):
                _aware(f"change.{name}", value)
            params[name] = int(value) if name == "status" else value
    return params


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


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(field: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{field}={value.isoformat()!r}: must be timezone-aware (UTC is stored)")


def _check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ValueError(f"offset={offset!r}: must be >= 0")
    if limit < 0:
        raise ValueError(f"limit={limit!r}: must be >= 0")


def _sqlstate(exc: DBAPIError) -> str | None:
    for candidate in (exc.orig, getattr(exc.orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _is_foreign_key_violation(exc: IntegrityError) -> bool:
    return _sqlstate(exc) == "23503" or "foreign key" in str(exc.orig).lower()


# -- rows to records ------------------------------------------------------------------------------


def _dump_spec(spec: JobSpec) -> tuple[str, int]:
    """The spec as JSON text, and its time type for the column."""
    data = spec.model_dump(mode="json")
    schedule = data.get("schedule")
    raw_type = schedule.get("time_type", TimeType.API) if isinstance(schedule, dict) else TimeType.API
    return json.dumps(data, separators=(",", ":"), sort_keys=True), int(raw_type)


@functools.lru_cache(maxsize=8192)
def _load_spec(text: str) -> JobSpec:
    # Specs rarely change and JobSpec is frozen: parse each distinct text once (due_jobs reads
    # thousands of jobs per tick).
    return JobSpec.model_validate(json.loads(text))


def _job(row: sa.Row[Any]) -> Job:
    return Job(
        id=row.id,
        namespace=row.namespace,
        group_id=row.group_id,
        spec=_load_spec(row.spec),
        enabled=bool(row.enabled),
        managed=bool(row.managed),
        next_fire_time=row.next_fire_time,
        namespace_source=row.namespace_source,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _dump_upstream(data: Sequence[tuple[str, str]]) -> str | None:
    return json.dumps([list(pair) for pair in data], separators=(",", ":")) if data else None


def _load_upstream(text: str | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(name), str(result)) for name, result in json.loads(text)) if text else ()


def _instance(row: sa.Row[Any]) -> Instance:
    return Instance(
        id=row.id,
        job_id=row.job_id,
        namespace=row.namespace,
        group_id=row.group_id,
        status=InstanceStatus(row.status),
        trigger_type=TriggerType(row.trigger_type),
        time_type=TimeType(row.time_type),
        schedule_time=row.schedule_time,
        data_time=row.data_time,
        created_at=row.created_at,
        attempt=row.attempt,
        instance_parameters=row.instance_parameters,
        wf_instance_id=row.wf_instance_id,
        start_time=row.start_time,
        end_time=row.end_time,
        worker_id=row.worker_id,
        worker_addr=row.worker_addr,
        executor=row.executor,
        result=row.result,
        progress=row.progress,
        retry_of=row.retry_of,
        timeout_alarmed=bool(row.timeout_alarmed),
        upstream_data=_load_upstream(row.upstream_data),
    )


def _new_instance_values(new: NewInstance, created_at: datetime) -> dict[str, Any]:
    return {
        "job_id": new.job_id,
        "namespace": new.namespace,
        "group_id": new.group_id,
        "status": int(new.status),
        "trigger_type": int(new.trigger_type),
        "time_type": int(new.time_type),
        "schedule_time": new.schedule_time,
        "data_time": new.data_time,
        "created_at": created_at,
        "attempt": new.attempt,
        "instance_parameters": new.instance_parameters,
        "wf_instance_id": new.wf_instance_id,
        "start_time": None,
        "end_time": None,
        "worker_id": "",
        "worker_addr": "",
        "executor": "",
        "result": new.result,
        "progress": "",
        "retry_of": new.retry_of,
        "upstream_data": _dump_upstream(new.upstream_data),
        "timeout_alarmed": False,
    }


def _created_instance(instance_id: int, new: NewInstance, created_at: datetime) -> Instance:
    return Instance(
        id=instance_id,
        job_id=new.job_id,
        namespace=new.namespace,
        group_id=new.group_id,
        status=new.status,
        trigger_type=new.trigger_type,
        time_type=new.time_type,
        schedule_time=new.schedule_time.astimezone(UTC),
        data_time=new.data_time.astimezone(UTC),
        created_at=created_at,
        attempt=new.attempt,
        instance_parameters=new.instance_parameters,
        wf_instance_id=new.wf_instance_id,
        result=new.result,
        retry_of=new.retry_of,
        upstream_data=new.upstream_data,
    )


def _check_new_instance(new: NewInstance, prefix: str = "") -> None:
    _aware(f"{prefix}schedule_time", new.schedule_time)
    _aware(f"{prefix}data_time", new.data_time)


def _dump_workflow_def(definition: WorkflowDef) -> str:
    return json.dumps(
        {
            "name": definition.name,
            "description": definition.description,
            "schedule": definition.schedule.model_dump(mode="json"),
            "time_zone": definition.time_zone,
            "nodes": list(definition.nodes),
            "edges": [list(edge) for edge in definition.edges],
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def _load_workflow_def(text: str) -> WorkflowDef:
    data = json.loads(text)
    return WorkflowDef(
        name=data["name"],
        description=data.get("description", ""),
        schedule=Schedule.model_validate(data["schedule"]),
        time_zone=data.get("time_zone", ""),
        nodes=tuple(int(node) for node in data["nodes"]),
        edges=tuple((int(a), int(b)) for a, b in data.get("edges", [])),
    )


def _workflow(row: sa.Row[Any]) -> Workflow:
    return Workflow(
        id=row.id,
        namespace=row.namespace,
        group_id=row.group_id,
        definition=_load_workflow_def(row.definition),
        enabled=bool(row.enabled),
        managed=bool(row.managed),
        next_fire_time=row.next_fire_time,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _wf_instance(row: sa.Row[Any]) -> WorkflowInstance:
    graph = json.loads(row.graph)
    return WorkflowInstance(
        id=row.id,
        workflow_id=row.workflow_id,
        namespace=row.namespace,
        group_id=row.group_id,
        status=InstanceStatus(row.status),
        trigger_type=TriggerType(row.trigger_type),
        schedule_time=row.schedule_time,
        nodes=tuple(int(node) for node in graph["nodes"]),
        edges=tuple((int(a), int(b)) for a, b in graph["edges"]),
        created_at=row.created_at,
        instance_parameters=row.instance_parameters,
        end_time=row.end_time,
        result=row.result,
    )


def _wf_node(row: sa.Row[Any]) -> WorkflowNode:
    return WorkflowNode(
        wf_instance_id=row.wf_instance_id,
        job_id=row.job_id,
        instance_id=row.instance_id,
        status=InstanceStatus(row.status),
        result=row.result,
    )


def _task(row: sa.Row[Any]) -> Task:
    return Task(
        instance_id=row.instance_id,
        task_id=row.task_id,
        name=row.name,
        status=TaskStatus(row.status),
        payload=bytes(row.payload),
        parent_id=row.parent_id,
        batch_seq=row.batch_seq,
        worker_id=row.worker_id,
        worker_addr=row.worker_addr,
        attempt=row.attempt,
        result=row.result,
        start_time=row.start_time,
        end_time=row.end_time,
    )


_TASK_UNFINISHED = (int(TaskStatus.INIT), int(TaskStatus.PULLED), int(TaskStatus.RUNNING))
# Bounded IN lists for task ids (a parallel instance has at most a few hundred tasks anyway).
_TASK_CHUNK = 500


def _calendar(row: sa.Row[Any]) -> Calendar:
    return Calendar(
        namespace=row.namespace,
        name=row.name,
        days=frozenset(date.fromisoformat(d) for d in json.loads(row.days)),
        description=row.description,
    )


def _alarm(row: sa.Row[Any]) -> Alarm:
    return Alarm(
        id=row.id,
        namespace=row.namespace,
        group_id=row.group_id,
        job_id=row.job_id,
        instance_id=row.instance_id,
        kind=row.kind,
        channel=row.channel,
        message=row.message,
        delivered=bool(row.delivered),
        created_at=row.created_at,
        detail=json.loads(row.detail),
    )


def _upgrade(connection: Connection) -> None:
    config = Config()
    # Config values go through configparser interpolation: a literal % must be doubled.
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class SqlStore(Store):
    """The scheduler's store on SQLite (``sqlite+aiosqlite:///path``) or PostgreSQL
    (``postgresql+asyncpg://...``); plain ``sqlite:///`` and ``postgresql://`` URLs get the async driver.

    ``await start()`` opens the pool and applies the migrations; ``await close()`` releases it.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self._url = normalize_url(url)
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._write_engine: AsyncEngine | None = None
        self._is_sqlite = self._url.get_backend_name() == "sqlite"
        self._in_memory = self._is_sqlite and self._url.database in (None, "", ":memory:")
        # SQLite has one writer at a time: queue writers here rather than in the busy handler.
        # An in-memory database is one shared connection, so everything queues.
        self._write_lock = asyncio.Lock() if self._is_sqlite else None
        self._read_lock = self._write_lock if self._in_memory else None
        self._last_nonce_purge = 0.0
        # SQLite file: short look-ups run on a plain synchronous connection in the caller's thread (see
        # _fetch). None on PostgreSQL and in-memory SQLite, and until started.
        self._reader_engine: sa.Engine | None = None
        self._reader: Connection | None = None
        self._access_keys_cached: tuple[float, bool] | None = None
        self._access_keys_changes = 0  # bumped by this store's key creates and deletes
        # SQLite file: hot write transactions run whole on a synchronous connection in one thread of
        # their own (see _write_sync). None on PostgreSQL and in-memory SQLite, and until started.
        self._writer_engine: sa.Engine | None = None
        self._writer: Connection | None = None
        self._writer_thread: concurrent.futures.ThreadPoolExecutor | None = None

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
        if self._engine is not None:
            return
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

    async def close(self) -> None:
        engine, self._engine, self._write_engine = self._engine, None, None
        self._close_reader()
        await self._close_writer()
        self._access_keys_cached = None
        if engine is not None:
            await engine.dispose()

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
    def _transaction(conn: Connection, work: Callable[[Connection], _T]) -> _T:
        # Runs in the writer thread: one SQLite write transaction, committed when work returns.
        with conn.begin():
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return work(conn)

    async def _write_sync(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` (synchronous statements) as one write transaction, committed on success.

        On a SQLite file it runs whole in the writer thread (see _open_writer); elsewhere on the async
        engine, through run_sync.
        """
        if self._writer is None or self._write_lock is None:
            async with self._write() as conn:
                return await conn.run_sync(work)
        async with self._write_lock:
            writer, thread = self._writer, self._writer_thread
            if writer is None or thread is None:
                raise RuntimeError("the store is not started: await store.start() first")
            done = asyncio.get_running_loop().run_in_executor(thread, self._transaction, writer, work)
            # A cancelled caller does not stop the transaction: keep the lock until it has ended.
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                await asyncio.wait([done])
                raise

    def _close_reader(self) -> None:
        reader, engine = self._reader, self._reader_engine
        self._reader = self._reader_engine = None
        if reader is not None:
            reader.close()
        if engine is not None:
            engine.dispose()

    def _run_inline(self, statement: sa.Executable, params: dict[str, Any]) -> list[sa.Row[Any]] | None:
        """The rows of a short read on the synchronous reader; None when it cannot answer now."""
        reader = self._reader
        if reader is None:
            return None
        try:
            return list(reader.execute(statement, params).all())
        except OperationalError as exc:
            # A lock (e.g. WAL recovery) or a closed connection: the asynchronous engine retries.
            log.debug("inline read fell back to the async engine: %s", exc)
            with contextlib.suppress(DBAPIError):
                reader.rollback()
            return None

    async def _fetch(self, statement: sa.Executable, params: dict[str, Any]) -> list[sa.Row[Any]]:
        """All rows of a short, bounded read (a look-up by key): see _open_reader."""
        rows = self._run_inline(statement, params)
        if rows is not None:
            return rows
        async with self._read() as conn:
            return list((await conn.execute(statement, params)).all())

    async def _fetch_one(self, statement: sa.Executable, params: dict[str, Any]) -> sa.Row[Any] | None:
        """The row of a short read of at most one row, or None."""
        rows = await self._fetch(statement, params)
        if len(rows) > 1:
            raise sa.exc.MultipleResultsFound("Multiple rows were found when one or none was required")
        return rows[0] if rows else None

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
        if self._write_lock is None:
            async with engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (one transaction, rolled back at the end)."""
        engine = self._engine
        if engine is None:
            raise RuntimeError("the store is not started: await store.start() first")
        if self._read_lock is None:
            async with engine.connect() as conn:
                yield conn
            return
        async with self._read_lock, engine.connect() as conn:
            yield conn

    def _insert(self, table: sa.Table) -> sqlite_dialect.Insert | pg_dialect.Insert:
        return sqlite_dialect.insert(table) if self._is_sqlite else pg_dialect.insert(table)

    # -- namespaces, groups, access keys ----------------------------------------------------------

    async def create_namespace(self, namespace: Namespace) -> Namespace:
        created = namespace.created_at or _now()
        values = {
            "id": namespace.id,
            "name": namespace.name,
            "description": namespace.description,
            "created_at": created,
        }
        try:
            async with self._write() as conn:
                await conn.execute(sa.insert(tables.namespaces).values(values))
        except IntegrityError:
            raise DuplicateError(f"namespace {namespace.id!r} already exists") from None
        return Namespace(namespace.id, namespace.name, namespace.description, created.astimezone(UTC))

    async def get_namespace(self, namespace_id: str) -> Namespace | None:
        row = await self._fetch_one(_GET_NAMESPACE, {"b_id": namespace_id})
        return None if row is None else Namespace(row.id, row.name, row.description, row.created_at)

    async def list_namespaces(self) -> list[Namespace]:
        t = tables.namespaces
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(t).order_by(t.c.id))).all()
        return [Namespace(r.id, r.name, r.description, r.created_at) for r in rows]

    async def create_group(self, group: Group) -> Group:
        created = group.created_at or _now()
        values = {
            "namespace": group.namespace,
            "group_id": group.group_id,
            "app_key": group.app_key,
            "description": group.description,
            "created_at": created,
        }
        try:
            async with self._write() as conn:
                await conn.execute(sa.insert(tables.groups).values(values))
        except IntegrityError:
            raise DuplicateError(
                f"group {group.group_id!r} already exists in namespace {group.namespace!r}"
            ) from None
        return Group(
            group.namespace, group.group_id, group.app_key, group.description, created.astimezone(UTC)
        )

    async def get_group(self, namespace: str, group_id: str) -> Group | None:
        row = await self._fetch_one(_GET_GROUP, {"b_namespace": namespace, "b_group": group_id})
        return (
            None
            if row is None
            else Group(row.namespace, row.group_id, row.app_key, row.description, row.created_at)
        )

    async def get_namespace_and_group(
        self, namespace: str, group_id: str
    ) -> tuple[Namespace | None, Group | None]:
        row = await self._fetch_one(_GET_NAMESPACE_GROUP, {"b_namespace": namespace, "b_group": group_id})
        if row is None:
            return None, None
        found = Namespace(row.ns_id, row.ns_name, row.ns_description, row.ns_created_at)
        if row.group_id is None:
            return found, None
        return found, Group(row.ns_id, row.group_id, row.app_key, row.description, row.created_at)

    async def list_groups(self, namespace: str) -> list[Group]:
        t = tables.groups
        query = sa.select(t).where(t.c.namespace == namespace).order_by(t.c.group_id)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [Group(r.namespace, r.group_id, r.app_key, r.description, r.created_at) for r in rows]

    async def create_access_key(self, key: AccessKey) -> AccessKey:
        created = key.created_at or _now()
        values = {
            "key_id": key.key_id,
            "secret": key.secret,
            "namespace": key.namespace,
            "enabled": key.enabled,
            "created_at": created,
        }
        try:
            async with self._write() as conn:
                await conn.execute(sa.insert(tables.access_keys).values(values))
        except IntegrityError:
            raise DuplicateError(f"access key {key.key_id!r} already exists") from None
        finally:
            self._access_keys_changed()
        return AccessKey(key.key_id, key.secret, key.namespace, key.enabled, created.astimezone(UTC))

    async def get_access_key(self, key_id: str) -> AccessKey | None:
        row = await self._fetch_one(_GET_ACCESS_KEY, {"b_id": key_id})
        if row is None:
            return None
        return AccessKey(row.key_id, row.secret, row.namespace, bool(row.enabled), row.created_at)

    async def list_access_keys(self, namespace: str | None = None) -> list[AccessKey]:
        t = tables.access_keys
        query = sa.select(t).order_by(t.c.namespace, t.c.key_id)
        if namespace is not None:
            query = query.where(t.c.namespace == namespace)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [AccessKey(r.key_id, r.secret, r.namespace, bool(r.enabled), r.created_at) for r in rows]

    async def has_access_keys(self) -> bool:
        # Asked on every OpenAPI request: answered from memory for ACCESS_KEYS_CACHE_SECONDS. This
        # store's own create_access_key and delete_access_key drop the answer at once.
        cached = self._access_keys_cached
        now = time.monotonic()
        if cached is not None and now - cached[0] < ACCESS_KEYS_CACHE_SECONDS:
            return cached[1]
        changes = self._access_keys_changes
        found = bool(await self._fetch(_ANY_ACCESS_KEY, {}))
        # Not when a create or delete ran meanwhile: the answer may predate it.
        if changes == self._access_keys_changes:
            self._access_keys_cached = (now, found)
        return found

    def _access_keys_changed(self) -> None:
        self._access_keys_changes += 1
        self._access_keys_cached = None

    async def delete_access_key(self, key_id: str) -> bool:
        t = tables.access_keys
        try:
            async with self._write() as conn:
                result = await conn.execute(sa.delete(t).where(t.c.key_id == key_id))
        finally:
            self._access_keys_changed()
        return result.rowcount > 0

    async def remember_nonce(self, nonce: str, expires_at: datetime) -> bool:
        _aware("expires_at", expires_at)
        t = tables.nonces
        now = _now()
        purge = time.monotonic() - self._last_nonce_purge >= _NONCE_PURGE_INTERVAL
        async with self._write() as conn:
            # An expired record of the same nonce is no replay: drop it so the insert below wins.
            await conn.execute(sa.delete(t).where(t.c.nonce == nonce, t.c.expires_at <= now))
            inserted = await conn.execute(
                self._insert(t)
                .values(nonce=nonce, expires_at=expires_at)
                .on_conflict_do_nothing(index_elements=[t.c.nonce])
                .returning(t.c.nonce)
            )
            fresh = inserted.first() is not None
            if purge:
                await conn.execute(sa.delete(t).where(t.c.expires_at <= now))
        if purge:
            self._last_nonce_purge = time.monotonic()
        return fresh

    # -- jobs -----------------------------------------------------------------------------------

    async def create_job(
        self,
        *,
        namespace: str,
        group_id: str,
        spec: JobSpec,
        enabled: bool,
        managed: bool,
        next_fire_time: datetime | None,
        namespace_source: str | None = None,
    ) -> Job:
        _aware("next_fire_time", next_fire_time)
        now = _now()
        spec_text, time_type = _dump_spec(spec)
        values = {
            "namespace": namespace,
            "namespace_source": namespace_source,
            "group_id": group_id,
            "name": spec.name,
            "spec": spec_text,
            "time_type": time_type,
            "enabled": enabled,
            "managed": managed,
            "next_fire_time": next_fire_time,
            "created_at": now,
            "updated_at": now,
        }
        try:
            job_id: int = await self._write_sync(lambda conn: conn.execute(_INSERT_JOB, values).scalar_one())
        except IntegrityError:
            raise DuplicateError(
                f"group {group_id!r} in namespace {namespace!r} already has a job named {spec.name!r}"
            ) from None
        return Job(
            id=job_id,
            namespace=namespace,
            group_id=group_id,
            spec=spec,
            enabled=enabled,
            managed=managed,
            next_fire_time=None if next_fire_time is None else next_fire_time.astimezone(UTC),
            namespace_source=namespace_source,
            created_at=now,
            updated_at=now,
        )

    async def get_job(self, job_id: int) -> Job | None:
        row = await self._fetch_one(_GET_JOB, {"b_id": job_id})
        return None if row is None else _job(row)

    async def find_job(self, namespace: str, group_id: str, name: str) -> Job | None:
        params = {"b_namespace": namespace, "b_group": group_id, "b_name": name}
        row = await self._fetch_one(_FIND_JOB, params)
        return None if row is None else _job(row)

    async def list_jobs(
        self,
        namespace: str,
        group_id: str,
        *,
        name_contains: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[Job]:
        _check_page(offset, limit)
        t = tables.jobs
        where = [t.c.namespace == namespace, t.c.group_id == group_id]
        if name_contains:
            where.append(t.c.name.icontains(name_contains, autoescape=True))
        async with self._read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(t).where(*where))).scalar_one()
            rows = (
                await conn.execute(sa.select(t).where(*where).order_by(t.c.id).offset(offset).limit(limit))
            ).all()
        return Page(items=[_job(r) for r in rows], total=total)

    async def update_job(
        self,
        job_id: int,
        *,
        spec: JobSpec | None = None,
        enabled: bool | None = None,
        managed: bool | None = None,
        next_fire_time: datetime | None = None,
        clear_next_fire_time: bool = False,
    ) -> Job:
        if next_fire_time is not None and clear_next_fire_time:
            raise ValueError(
                f"next_fire_time={next_fire_time.isoformat()!r}: "
                "cannot be given together with clear_next_fire_time"
            )
        _aware("next_fire_time", next_fire_time)
        values: dict[str, Any] = {"updated_at": _now()}
        if spec is not None:
            values["spec"], values["time_type"] = _dump_spec(spec)
            values["name"] = spec.name
        if enabled is not None:
            values["enabled"] = enabled
        if managed is not None:
            values["managed"] = managed
        if next_fire_time is not None:
            values["next_fire_time"] = next_fire_time
        elif clear_next_fire_time:
            values["next_fire_time"] = None
        t = tables.jobs
        try:
            async with self._write() as conn:
                row = (
                    await conn.execute(sa.update(t).where(t.c.id == job_id).values(values).returning(*t.c))
                ).one_or_none()
        except IntegrityError:
            name = spec.name if spec is not None else "?"
            raise DuplicateError(f"job {job_id}: its group already has a job named {name!r}") from None
        if row is None:
            raise NotFoundError(f"job_id={job_id!r}: no such job")
        return _job(row)

    async def delete_job(self, job_id: int) -> bool:
        async with self._write() as conn:
            await conn.execute(sa.delete(tables.instances).where(tables.instances.c.job_id == job_id))
            result = await conn.execute(sa.delete(tables.jobs).where(tables.jobs.c.id == job_id))
        return result.rowcount > 0

    # -- the trigger engine ---------------------------------------------------------------------

    async def next_due_time(self) -> datetime | None:
        t = tables.jobs
        # ORDER BY .. LIMIT 1 (not min()) so SQLite walks the partial index too.
        query = (
            sa.select(t.c.next_fire_time).where(JOB_CAN_FIRE).order_by(t.c.next_fire_time, t.c.id).limit(1)
        )
        async with self._read() as conn:
            value: datetime | None = (await conn.execute(query)).scalar_one_or_none()
        return value

    async def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        _check_page(0, limit)
        _aware("now", now)
        t = tables.jobs
        query = (
            sa.select(t)
            .where(JOB_CAN_FIRE, t.c.next_fire_time <= sa.literal(now, UtcDateTime()))
            .order_by(t.c.next_fire_time, t.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_job(r) for r in rows]

    async def claim_fires(self, fires: Sequence[Fire]) -> list[Instance | None]:
        for index, fire in enumerate(fires):
            if fire.instance is not None and fire.instance.job_id != fire.job_id:
                raise ValueError(
                    f"fires[{index}].instance.job_id={fire.instance.job_id!r}: "
                    f"differs from the fire's job_id {fire.job_id!r}"
                )
            _aware(f"fires[{index}].due", fire.due)
            _aware(f"fires[{index}].next_fire_time", fire.next_fire_time)
            if fire.instance is not None:
                _check_new_instance(fire.instance, f"fires[{index}].instance.")
        if not fires:
            return []
        for attempt in range(1, _CLAIM_ATTEMPTS + 1):
            try:
                async with self._write() as conn:
                    return await self._claim(conn, fires)
            except DBAPIError as exc:
                # Only PostgreSQL reports these; the whole transaction rolled back, so try again.
                if attempt == _CLAIM_ATTEMPTS or _sqlstate(exc) not in _RETRYABLE_SQLSTATES:
                    raise
                log.info("claim_fires: retrying after %s (attempt %d)", _sqlstate(exc), attempt)
        raise AssertionError("unreachable")

    async def _claim(self, conn: AsyncConnection, fires: Sequence[Fire]) -> list[Instance | None]:
        t = tables.jobs
        # Lock the jobs, then read where they stand: on PostgreSQL with row locks taken in id order
        # (so replicas claiming overlapping batches cannot deadlock), on SQLite by the write
        # transaction itself. Nothing can move them before commit, so the winners are decided here.
        ids = sorted({fire.job_id for fire in fires})
        current: dict[int, datetime | None] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            query = (
                sa.select(t.c.id, t.c.next_fire_time)
                .where(t.c.id.in_(ids[start : start + _ID_CHUNK]), t.c.enabled == sa.true())
                .order_by(t.c.id)
            )
            if not self._is_sqlite:
                query = query.with_for_update()
            current.update((row.id, row.next_fire_time) for row in await conn.execute(query))
        winners: list[int] = []
        for index, fire in enumerate(fires):
            # In order, so a job's second fire in one call (due = the first one's new time) wins too.
            if fire.job_id in current and current[fire.job_id] == fire.due:
                current[fire.job_id] = fire.next_fire_time
                winners.append(index)
        if not winners:
            return [None] * len(fires)
        # The compare-and-set, per fire, in order; the guard repeats the decision made above.
        claim = (
            sa.update(t)
            .where(
                t.c.id == sa.bindparam("b_id", type_=sa.BigInteger()),
                t.c.enabled == sa.true(),
                t.c.next_fire_time == sa.bindparam("b_due", type_=UtcDateTime()),
            )
            .values(next_fire_time=sa.bindparam("b_new", type_=UtcDateTime()))
        )
        params = [
            {"b_id": fires[i].job_id, "b_due": fires[i].due, "b_new": fires[i].next_fire_time}
            for i in winners
        ]
        moved = (await conn.execute(claim, params)).rowcount
        if moved not in (-1, len(winners)):
            raise StoreError(f"claim_fires: {moved} of {len(winners)} locked jobs moved; rolled back")
        created_at = _now()
        wanted = [i for i in winners if fires[i].instance is not None]
        news = [instance for i in wanted if (instance := fires[i].instance) is not None]
        out: list[Instance | None] = [None] * len(fires)
        if not news:
            return out
        ids_made = await self._insert_instances(conn, news, created_at)
        for i, new, instance_id in zip(wanted, news, ids_made, strict=True):
            out[i] = _created_instance(instance_id, new, created_at)
        return out

    async def _insert_instances(
        self, conn: AsyncConnection, news: Sequence[NewInstance], created_at: datetime
    ) -> list[int]:
        """Insert instances in one batch; their ids in the order given."""
        t = tables.instances
        rows = [_new_instance_values(new, created_at) for new in news]
        if not self._is_sqlite:
            result = await conn.execute(sa.insert(t).returning(t.c.id, sort_by_parameter_order=True), rows)
            return list(result.scalars().all())
        # A plain executemany is several times faster on SQLite than INSERT .. RETURNING batches. This
        # transaction is the only writer and AUTOINCREMENT ids only grow, so the new rows are exactly
        # those above the previous highest id, in insertion order.
        before = (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.id), 0)))).scalar_one()
        await conn.execute(sa.insert(t), rows)
        made = list((await conn.execute(sa.select(t.c.id).where(t.c.id > before).order_by(t.c.id))).scalars())
        if len(made) != len(rows):
            raise StoreError(f"inserted {len(rows)} instances but found {len(made)} new rows; rolled back")
        return made

    # -- instances ------------------------------------------------------------------------------

    async def create_instance(self, new: NewInstance) -> Instance:
        _check_new_instance(new)
        created_at = _now()
        values = _new_instance_values(new, created_at)
        try:
            instance_id: int = await self._write_sync(
                lambda conn: conn.execute(_INSERT_INSTANCE, values).scalar_one()
            )
        except IntegrityError as exc:
            if _is_foreign_key_violation(exc):
                raise NotFoundError(f"job_id={new.job_id!r}: no such job") from None
            raise
        return _created_instance(instance_id, new, created_at)

    async def get_instance(self, instance_id: int) -> Instance | None:
        row = await self._fetch_one(_GET_INSTANCE, {"b_id": instance_id})
        return None if row is None else _instance(row)

    async def list_instances(
        self,
        job_id: int,
        *,
        statuses: Sequence[InstanceStatus] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> Page[Instance]:
        """A job's instances, newest (highest id) first; ``since <= schedule_time <= until``."""
        _check_page(offset, limit)
        _aware("since", since)
        _aware("until", until)
        t = tables.instances
        where: list[sa.ColumnElement[bool]] = [t.c.job_id == job_id]
        if statuses is not None:
            where.append(t.c.status.in_([int(s) for s in statuses]))
        if since is not None:
            where.append(t.c.schedule_time >= sa.literal(since, UtcDateTime()))
        if until is not None:
            where.append(t.c.schedule_time <= sa.literal(until, UtcDateTime()))
        async with self._read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(t).where(*where))).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(t).where(*where).order_by(t.c.id.desc()).offset(offset).limit(limit)
                )
            ).all()
        return Page(items=[_instance(r) for r in rows], total=total)

    async def instances_with_status(
        self, statuses: Sequence[InstanceStatus], *, limit: int = 1000, group_id: str | None = None
    ) -> list[Instance]:
        _check_page(0, limit)
        t = tables.instances
        query = sa.select(t).where(t.c.status.in_([int(s) for s in statuses]))
        if group_id is not None:
            query = query.where(t.c.group_id == group_id)
        async with self._read() as conn:
            rows = (await conn.execute(query.order_by(t.c.id).limit(limit))).all()
        return [_instance(r) for r in rows]

    async def update_instance(
        self,
        instance_id: int,
        change: InstanceChange,
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
    ) -> Instance | None:
        params = _instance_change_params(instance_id, change, only_if_status)
        row: sa.Row[Any] | None
        if len(params) == (1 if only_if_status is None else 2):  # nothing to set: a guarded read
            row = await self._fetch_one(_GET_INSTANCE if only_if_status is None else _GET_INSTANCE_IF, params)
        else:
            update = _UPDATE_INSTANCE if only_if_status is None else _UPDATE_INSTANCE_IF
            row = await self._write_sync(lambda conn: conn.execute(update, params).one_or_none())
        return None if row is None else _instance(row)

    async def update_instances(
        self,
        changes: Sequence[tuple[int, InstanceChange]],
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
    ) -> dict[int, Instance | None]:
        update = _UPDATE_INSTANCE if only_if_status is None else _UPDATE_INSTANCE_IF
        found: dict[int, Instance | None] = {}
        for start in range(0, len(changes), 500):  # bounded transactions
            chunk = [
                _instance_change_params(i, change, only_if_status)
                for i, change in changes[start : start + 500]
            ]

            def work(conn: Connection, chunk: list[dict[str, Any]] = chunk) -> list[sa.Row[Any] | None]:
                return [conn.execute(update, params).one_or_none() for params in chunk]

            rows = await self._write_sync(work)
            found.update(
                {
                    params["b_id"]: None if row is None else _instance(row)
                    for params, row in zip(chunk, rows, strict=True)
                }
            )
        return found

    async def count_active_instances(self, job_id: int) -> int:
        # A bounded read: the (job_id, status) index holds just the job's active instances.
        row = await self._fetch_one(_COUNT_ACTIVE, {"b_job_id": job_id})
        assert row is not None  # COUNT always answers one row
        return int(row[0])

    async def count_active_instances_by_job(self, job_ids: Sequence[int]) -> dict[int, int]:
        t = tables.instances
        counts: dict[int, int] = {}
        for start in range(0, len(job_ids), 500):  # bounded IN lists
            chunk = list(job_ids[start : start + 500])
            query = (
                sa.select(t.c.job_id, sa.func.count())
                .where(t.c.job_id.in_(chunk), t.c.status.in_([int(s) for s in ACTIVE_INSTANCE_STATUSES]))
                .group_by(t.c.job_id)
            )
            async with self._read() as conn:
                counts.update({int(row[0]): int(row[1]) for row in await conn.execute(query)})
        return counts

    async def find_retry(self, instance_id: int) -> Instance | None:
        t = tables.instances
        query = sa.select(t).where(t.c.retry_of == instance_id).order_by(t.c.id).limit(1)
        async with self._read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _instance(row)

    async def prune_instances(self, job_id: int, keep: int) -> int:
        if keep <= 0:
            return 0  # keeping no limit: history is kept whole
        t = tables.instances
        finished = [t.c.job_id == job_id, t.c.status.in_([int(s) for s in _FINISHED])]
        # The newest finished instance beyond `keep`: it and everything older go.
        boundary = sa.select(t.c.id).where(*finished).order_by(t.c.id.desc()).offset(keep).limit(1)
        async with self._write() as conn:
            oldest_pruned = (await conn.execute(boundary)).scalar_one_or_none()
            if oldest_pruned is None:
                return 0
            result = await conn.execute(sa.delete(t).where(*finished, t.c.id <= oldest_pruned))
        return result.rowcount

    # -- calendars and alarms -------------------------------------------------------------------

    async def put_calendar(self, calendar: Calendar) -> Calendar:
        t = tables.calendars
        days = json.dumps(sorted(d.isoformat() for d in calendar.days))
        upsert = self._insert(t).values(
            namespace=calendar.namespace, name=calendar.name, description=calendar.description, days=days
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[t.c.namespace, t.c.name],
            set_={"description": upsert.excluded.description, "days": upsert.excluded.days},
        )
        async with self._write() as conn:
            await conn.execute(upsert)
        return calendar

    async def get_calendar(self, namespace: str, name: str) -> Calendar | None:
        t = tables.calendars
        query = sa.select(t).where(t.c.namespace == namespace, t.c.name == name)
        async with self._read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _calendar(row)

    async def list_calendars(self, namespace: str) -> list[Calendar]:
        t = tables.calendars
        query = sa.select(t).where(t.c.namespace == namespace).order_by(t.c.name)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_calendar(r) for r in rows]

    async def record_alarm(
        self,
        *,
        namespace: str,
        group_id: str,
        job_id: int,
        instance_id: int | None,
        kind: str,
        channel: str,
        message: str,
        delivered: bool,
        detail: dict[str, Any] | None = None,
    ) -> Alarm:
        created_at = _now()
        detail = dict(detail or {})
        try:
            detail_text = json.dumps(detail, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"detail={detail!r}: not JSON-serializable ({exc})") from None
        values = {
            "namespace": namespace,
            "group_id": group_id,
            "job_id": job_id,
            "instance_id": instance_id,
            "kind": kind,
            "channel": channel,
            "message": message,
            "delivered": delivered,
            "created_at": created_at,
            "detail": detail_text,
        }
        t = tables.alarms
        async with self._write() as conn:
            alarm_id = (await conn.execute(sa.insert(t).values(values).returning(t.c.id))).scalar_one()
        return Alarm(
            id=alarm_id,
            namespace=namespace,
            group_id=group_id,
            job_id=job_id,
            instance_id=instance_id,
            kind=kind,
            channel=channel,
            message=message,
            delivered=delivered,
            created_at=created_at,
            detail=detail,
        )

    async def list_alarms(self, *, job_id: int | None = None, limit: int = 100) -> list[Alarm]:
        """Alarms newest first, optionally of one job."""
        _check_page(0, limit)
        t = tables.alarms
        query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if job_id is not None:
            query = query.where(t.c.job_id == job_id)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_alarm(r) for r in rows]

    # -- workflows ------------------------------------------------------------------------------

    async def create_workflow(
        self,
        *,
        namespace: str,
        group_id: str,
        definition: WorkflowDef,
        enabled: bool,
        managed: bool,
        next_fire_time: datetime | None,
    ) -> Workflow:
        _aware("next_fire_time", next_fire_time)
        now = _now()
        values = {
            "namespace": namespace,
            "group_id": group_id,
            "name": definition.name,
            "definition": _dump_workflow_def(definition),
            "enabled": enabled,
            "managed": managed,
            "next_fire_time": next_fire_time,
            "created_at": now,
            "updated_at": now,
        }
        t = tables.workflows
        try:
            async with self._write() as conn:
                workflow_id = (await conn.execute(sa.insert(t).values(values).returning(t.c.id))).scalar_one()
        except IntegrityError:
            raise DuplicateError(
                f"group {group_id!r} in namespace {namespace!r} already has a workflow named "
                f"{definition.name!r}"
            ) from None
        return Workflow(
            id=workflow_id,
            namespace=namespace,
            group_id=group_id,
            definition=definition,
            enabled=enabled,
            managed=managed,
            next_fire_time=None if next_fire_time is None else next_fire_time.astimezone(UTC),
            created_at=now,
            updated_at=now,
        )

    async def get_workflow(self, workflow_id: int) -> Workflow | None:
        t = tables.workflows
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == workflow_id))).one_or_none()
        return None if row is None else _workflow(row)

    async def find_workflow(self, namespace: str, group_id: str, name: str) -> Workflow | None:
        t = tables.workflows
        query = sa.select(t).where(t.c.namespace == namespace, t.c.group_id == group_id, t.c.name == name)
        async with self._read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _workflow(row)

    async def list_workflows(
        self, namespace: str, group_id: str, *, offset: int = 0, limit: int = 50
    ) -> Page[Workflow]:
        _check_page(offset, limit)
        t = tables.workflows
        where = [t.c.namespace == namespace, t.c.group_id == group_id]
        async with self._read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(t).where(*where))).scalar_one()
            rows = (
                await conn.execute(sa.select(t).where(*where).order_by(t.c.id).offset(offset).limit(limit))
            ).all()
        return Page(items=[_workflow(r) for r in rows], total=total)

    async def update_workflow(
        self,
        workflow_id: int,
        *,
        definition: WorkflowDef | None = None,
        enabled: bool | None = None,
        managed: bool | None = None,
        next_fire_time: datetime | None = None,
        clear_next_fire_time: bool = False,
    ) -> Workflow:
        if next_fire_time is not None and clear_next_fire_time:
            raise ValueError("next_fire_time cannot be given together with clear_next_fire_time")
        _aware("next_fire_time", next_fire_time)
        values: dict[str, Any] = {"updated_at": _now()}
        if definition is not None:
            values["definition"] = _dump_workflow_def(definition)
            values["name"] = definition.name
        if enabled is not None:
            values["enabled"] = enabled
        if managed is not None:
            values["managed"] = managed
        if next_fire_time is not None:
            values["next_fire_time"] = next_fire_time
        elif clear_next_fire_time:
            values["next_fire_time"] = None
        t = tables.workflows
        try:
            async with self._write() as conn:
                row = (
                    await conn.execute(
                        sa.update(t).where(t.c.id == workflow_id).values(values).returning(*t.c)
                    )
                ).one_or_none()
        except IntegrityError:
            name = definition.name if definition is not None else "?"
            raise DuplicateError(
                f"workflow {workflow_id}: its group already has a workflow named {name!r}"
            ) from None
        if row is None:
            raise NotFoundError(f"workflow_id={workflow_id!r}: no such workflow")
        return _workflow(row)

    async def delete_workflow(self, workflow_id: int) -> bool:
        wi, wn = tables.wf_instances, tables.wf_nodes
        async with self._write() as conn:
            ids = sa.select(wi.c.id).where(wi.c.workflow_id == workflow_id).scalar_subquery()
            await conn.execute(sa.delete(wn).where(wn.c.wf_instance_id.in_(ids)))
            await conn.execute(sa.delete(wi).where(wi.c.workflow_id == workflow_id))
            result = await conn.execute(
                sa.delete(tables.workflows).where(tables.workflows.c.id == workflow_id)
            )
        return result.rowcount > 0

    async def next_workflow_due_time(self) -> datetime | None:
        t = tables.workflows
        query = (
            sa.select(t.c.next_fire_time)
            .where(t.c.enabled == sa.true(), t.c.next_fire_time.isnot(None))
            .order_by(t.c.next_fire_time, t.c.id)
            .limit(1)
        )
        async with self._read() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def due_workflows(self, now: datetime, limit: int) -> list[Workflow]:
        _aware("now", now)
        t = tables.workflows
        query = (
            sa.select(t)
            .where(t.c.enabled == sa.true(), t.c.next_fire_time.isnot(None), t.c.next_fire_time <= now)
            .order_by(t.c.next_fire_time, t.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_workflow(r) for r in rows]

    async def claim_workflow_fire(self, fire: WorkflowFire) -> WorkflowInstance | None:
        _aware("due", fire.due)
        _aware("next_fire_time", fire.next_fire_time)
        t = tables.workflows
        async with self._write() as conn:
            claimed = await conn.execute(
                sa.update(t)
                .where(t.c.id == fire.workflow_id, t.c.next_fire_time == fire.due)
                .values(next_fire_time=fire.next_fire_time)
            )
            if claimed.rowcount == 0 or fire.instance is None:
                return None
            return await self._insert_wf_instance(conn, fire.instance)

    async def _insert_wf_instance(self, conn: AsyncConnection, new: NewWorkflowInstance) -> WorkflowInstance:
        _aware("schedule_time", new.schedule_time)
        created_at = _now()
        t = tables.wf_instances
        values = {
            "workflow_id": new.workflow_id,
            "namespace": new.namespace,
            "group_id": new.group_id,
            "status": int(new.status),
            "trigger_type": int(new.trigger_type),
            "schedule_time": new.schedule_time,
            "graph": json.dumps({"nodes": list(new.nodes), "edges": [list(e) for e in new.edges]}),
            "instance_parameters": new.instance_parameters,
            "created_at": created_at,
            "end_time": None,
            "result": "",
        }
        wf_instance_id = (await conn.execute(sa.insert(t).values(values).returning(t.c.id))).scalar_one()
        return WorkflowInstance(
            id=wf_instance_id,
            workflow_id=new.workflow_id,
            namespace=new.namespace,
            group_id=new.group_id,
            status=new.status,
            trigger_type=new.trigger_type,
            schedule_time=new.schedule_time.astimezone(UTC),
            nodes=new.nodes,
            edges=new.edges,
            created_at=created_at,
            instance_parameters=new.instance_parameters,
        )

    async def create_workflow_instance(self, new: NewWorkflowInstance) -> WorkflowInstance:
        try:
            async with self._write() as conn:
                return await self._insert_wf_instance(conn, new)
        except IntegrityError as exc:
            if _is_foreign_key_violation(exc):
                raise NotFoundError(f"workflow_id={new.workflow_id!r}: no such workflow") from None
            raise

    async def get_workflow_instance(self, wf_instance_id: int) -> WorkflowInstance | None:
        t = tables.wf_instances
        async with self._read() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.id == wf_instance_id))).one_or_none()
        return None if row is None else _wf_instance(row)

    async def list_workflow_instances(
        self,
        workflow_id: int,
        *,
        statuses: Sequence[InstanceStatus] | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> Page[WorkflowInstance]:
        _check_page(offset, limit)
        t = tables.wf_instances
        where = [t.c.workflow_id == workflow_id]
        if statuses:
            where.append(t.c.status.in_([int(s) for s in statuses]))
        async with self._read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(t).where(*where))).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(t).where(*where).order_by(t.c.id.desc()).offset(offset).limit(limit)
                )
            ).all()
        return Page(items=[_wf_instance(r) for r in rows], total=total)

    async def active_workflow_instance_ids(self, *, limit: int = 10_000) -> list[int]:
        _check_page(0, limit)
        t = tables.wf_instances
        active = [int(InstanceStatus.WAITING), int(InstanceStatus.RUNNING)]
        query = sa.select(t.c.id).where(t.c.status.in_(active)).order_by(t.c.id).limit(limit)
        async with self._read() as conn:
            return [int(r.id) for r in (await conn.execute(query)).all()]

    async def update_workflow_instance(
        self,
        wf_instance_id: int,
        *,
        status: InstanceStatus,
        end_time: datetime | None = None,
        result: str | None = None,
        only_if_status: Sequence[InstanceStatus] | None = None,
    ) -> WorkflowInstance | None:
        _aware("end_time", end_time)
        t = tables.wf_instances
        values: dict[str, Any] = {"status": int(status), "end_time": end_time}
        if result is not None:
            values["result"] = result
        query = sa.update(t).where(t.c.id == wf_instance_id)
        if only_if_status is not None:
            query = query.where(t.c.status.in_([int(s) for s in only_if_status]))
        async with self._write() as conn:
            row = (await conn.execute(query.values(values).returning(*t.c))).one_or_none()
        return None if row is None else _wf_instance(row)

    async def start_workflow_node(
        self, wf_instance_id: int, job_id: int, new: NewInstance, *, rerun: bool = False
    ) -> Instance | None:
        _check_new_instance(new)
        created_at = _now()
        t, n = tables.instances, tables.wf_nodes
        try:
            async with self._write() as conn:
                if rerun:
                    # The compare-and-set on FAILED comes first: a lost race writes nothing.
                    moved = await conn.execute(
                        sa.update(n)
                        .where(
                            n.c.wf_instance_id == wf_instance_id,
                            n.c.job_id == job_id,
                            n.c.status == int(InstanceStatus.FAILED),
                        )
                        .values(status=int(InstanceStatus.WAITING), result="")
                    )
                    if moved.rowcount == 0:
                        return None
                instance_id = (
                    await conn.execute(
                        sa.insert(t).values(_new_instance_values(new, created_at)).returning(t.c.id)
                    )
                ).scalar_one()
                if rerun:
                    await conn.execute(
                        sa.update(n)
                        .where(n.c.wf_instance_id == wf_instance_id, n.c.job_id == job_id)
                        .values(instance_id=instance_id)
                    )
                else:
                    await conn.execute(
                        sa.insert(n).values(
                            wf_instance_id=wf_instance_id,
                            job_id=job_id,
                            instance_id=instance_id,
                            status=int(InstanceStatus.WAITING),
                            result="",
                        )
                    )
        except IntegrityError as exc:
            if _is_foreign_key_violation(exc):
                raise NotFoundError(
                    f"wf_instance_id={wf_instance_id!r} or job_id={job_id!r}: "
                    "no such workflow instance or job"
                ) from None
            return None  # the node row exists: another caller started it
        return _created_instance(instance_id, new, created_at)

    async def list_workflow_nodes(self, wf_instance_id: int) -> list[WorkflowNode]:
        n = tables.wf_nodes
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    sa.select(n).where(n.c.wf_instance_id == wf_instance_id).order_by(n.c.job_id)
                )
            ).all()
        return [_wf_node(r) for r in rows]

    async def update_workflow_node(
        self,
        wf_instance_id: int,
        job_id: int,
        *,
        only_if_instance: int,
        status: InstanceStatus | None = None,
        result: str | None = None,
        instance_id: int | None = None,
    ) -> WorkflowNode | None:
        n = tables.wf_nodes
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = int(status)
        if result is not None:
            values["result"] = result
        if instance_id is not None:
            values["instance_id"] = instance_id
        where = (
            n.c.wf_instance_id == wf_instance_id,
            n.c.job_id == job_id,
            n.c.instance_id == only_if_instance,
        )
        async with self._write() as conn:
            if not values:
                row = (await conn.execute(sa.select(n).where(*where))).one_or_none()
            else:
                row = (
                    await conn.execute(sa.update(n).where(*where).values(values).returning(*n.c))
                ).one_or_none()
        return None if row is None else _wf_node(row)

    # -- subtasks of parallel instances --------------------------------------------------------------

    async def create_tasks(self, instance_id: int, tasks: Sequence[NewTask]) -> int:
        if not tasks:
            return 0
        rows = [
            {
                "instance_id": instance_id,
                "task_id": task.task_id,
                "name": task.name,
                "payload": task.payload,
                "parent_id": task.parent_id,
                "batch_seq": task.batch_seq,
                "status": int(TaskStatus.INIT),
                "worker_id": "",
                "worker_addr": "",
                "attempt": 0,
                "result": "",
            }
            for task in tasks
        ]
        statement = self._insert(tables.tasks).on_conflict_do_nothing(
            index_elements=["instance_id", "task_id"]
        )
        try:
            async with self._write() as conn:
                result = await conn.execute(statement, rows)
        except IntegrityError as exc:
            if _is_foreign_key_violation(exc):
                raise NotFoundError(f"instance_id={instance_id!r}: no such instance") from None
            raise
        # executemany rowcounts differ by driver; -1 means "unknown", so count what is stored.
        if result.rowcount is not None and result.rowcount >= 0:
            return int(result.rowcount)
        return len(rows)

    async def update_task_statuses(self, instance_id: int, changes: Sequence[TaskStatusChange]) -> int:
        t = tables.tasks
        now = _now()
        changed = 0
        async with self._write() as conn:
            for change in changes:
                ids = list(change.task_ids)
                if change.results and len(change.results) != len(ids):
                    raise ValueError(
                        f"results: {len(change.results)} given for {len(ids)} task id(s); "
                        "give one per task id or none"
                    )
                base = [t.c.instance_id == instance_id, t.c.status.in_(_TASK_UNFINISHED)]
                status = change.status
                if status.finished:
                    values: dict[str, Any] = {"status": int(status), "end_time": now}
                    if change.worker_addr:
                        values["worker_addr"] = change.worker_addr
                        values["worker_id"] = change.worker_id
                    if change.results:
                        for task_id, text in zip(ids, change.results, strict=True):
                            result = await conn.execute(
                                sa.update(t)
                                .where(*base, t.c.task_id == task_id)
                                .values({**values, "result": text})
                            )
                            changed += result.rowcount
                        continue
                elif status is TaskStatus.PULLED:
                    values = {
                        "status": int(status),
                        "worker_id": change.worker_id,
                        "worker_addr": change.worker_addr,
                        "attempt": t.c.attempt + 1,
                    }
                elif status is TaskStatus.RUNNING:
                    values = {"status": int(status), "start_time": now}
                    if change.worker_addr:
                        values["worker_addr"] = change.worker_addr
                        values["worker_id"] = change.worker_id
                else:
                    values = {"status": int(status)}
                for start in range(0, len(ids), _TASK_CHUNK):
                    chunk = ids[start : start + _TASK_CHUNK]
                    result = await conn.execute(
                        sa.update(t).where(*base, t.c.task_id.in_(chunk)).values(values)
                    )
                    changed += result.rowcount
        return changed

    async def list_tasks(
        self,
        instance_id: int,
        *,
        statuses: Sequence[TaskStatus] | None = None,
        task_ids: Sequence[int] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[Task]:
        _check_page(offset, limit)
        t = tables.tasks
        where: list[sa.ColumnElement[bool]] = [t.c.instance_id == instance_id]
        if statuses:
            where.append(t.c.status.in_([int(s) for s in statuses]))
        if task_ids is not None:
            where.append(t.c.task_id.in_(list(task_ids)))
        async with self._read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(t).where(*where))).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(t).where(*where).order_by(t.c.task_id).offset(offset).limit(limit)
                )
            ).all()
        return Page(items=[_task(r) for r in rows], total=int(total))

    async def count_tasks(self, instance_id: int) -> dict[TaskStatus, int]:
        t = tables.tasks
        query = (
            sa.select(t.c.status, sa.func.count()).where(t.c.instance_id == instance_id).group_by(t.c.status)
        )
        async with self._read() as conn:
            return {TaskStatus(int(row[0])): int(row[1]) for row in await conn.execute(query)}

    async def reset_tasks(
        self, instance_id: int, task_ids: Sequence[int], *, only_if_status: Sequence[TaskStatus]
    ) -> list[int]:
        t = tables.tasks
        reset: list[int] = []
        values = {
            "status": int(TaskStatus.INIT),
            "result": "",
            "worker_id": "",
            "worker_addr": "",
            "start_time": None,
            "end_time": None,
        }
        ids = list(dict.fromkeys(task_ids))
        async with self._write() as conn:
            for start in range(0, len(ids), _TASK_CHUNK):
                chunk = ids[start : start + _TASK_CHUNK]
                statement = (
                    sa.update(t)
                    .where(
                        t.c.instance_id == instance_id,
                        t.c.task_id.in_(chunk),
                        t.c.status.in_([int(s) for s in only_if_status]),
                    )
                    .values(values)
                    .returning(t.c.task_id)
                )
                reset.extend(int(row[0]) for row in await conn.execute(statement))
        return sorted(reset)

    async def copy_tasks(self, from_instance_id: int, to_instance_id: int) -> int:
        t = tables.tasks
        success = int(TaskStatus.SUCCESS)
        keep = t.c.status == success
        columns = [
            "instance_id",
            "task_id",
            "name",
            "payload",
            "parent_id",
            "batch_seq",
            "status",
            "worker_id",
            "worker_addr",
            "attempt",
            "result",
            "start_time",
            "end_time",
        ]
        source = sa.select(
            sa.literal(to_instance_id, sa.BigInteger()),
            t.c.task_id,
            t.c.name,
            t.c.payload,
            t.c.parent_id,
            t.c.batch_seq,
            sa.case((keep, success), else_=int(TaskStatus.INIT)),
            sa.case((keep, t.c.worker_id), else_=""),
            sa.case((keep, t.c.worker_addr), else_=""),
            t.c.attempt,
            sa.case((keep, t.c.result), else_=""),
            sa.case((keep, t.c.start_time), else_=sa.null()),
            sa.case((keep, t.c.end_time), else_=sa.null()),
        ).where(t.c.instance_id == from_instance_id)
        has_any = sa.select(t.c.task_id).where(t.c.instance_id == to_instance_id).limit(1)
        try:
            async with self._write() as conn:
                if (await conn.execute(has_any)).first() is not None:
                    return 0
                result = await conn.execute(sa.insert(t).from_select(columns, source))
        except IntegrityError as exc:
            if _is_foreign_key_violation(exc):
                raise NotFoundError(f"instance_id={to_instance_id!r}: no such instance") from None
            raise
        return int(result.rowcount)
