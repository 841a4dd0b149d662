"""``JobContext``: what a running hook knows about its job, instance and task; the current-context var."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import traceback
from collections.abc import Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sx.processors._codec import JSON_CODEC, MAX_PAYLOAD_BYTES, Codec
from sx.processors._enums import REDUCE_TASK_NAME, ROOT_TASK_NAME, ExecuteMode, JobType, TaskStatus
from sx.processors._errors import CancelledError, PayloadError

__all__ = [
    "JobContext",
    "JobLogger",
    "LogSink",
    "TaskMapper",
    "UpstreamData",
    "current_context",
    "get_current_context",
]

_RESERVED_TASK_NAMES = frozenset({ROOT_TASK_NAME, REDUCE_TASK_NAME})


class TaskMapper(Protocol):
    """Takes a batch of encoded subtasks from ``ctx.map``; the worker supplies it to map kinds."""

    async def map(self, ctx: JobContext, payloads: list[bytes], task_name: str) -> None:
        """Accept the batch (persist or queue it); raise to refuse it."""
        ...


class LogSink(Protocol):
    """Where a run's log lines go besides the local log: the worker ships them to the scheduler.

    ``write`` is called from hook threads and the loop alike, for every line: it must be thread-safe
    and must not block.
    """

    def write(self, ctx: JobContext, level: int, message: str) -> None: ...

    def captures(self, ctx: JobContext) -> bool:
        """Whether plain ``logging`` calls and ``print`` inside ``ctx``'s hooks are shipped too."""
        ...


@dataclass(frozen=True, slots=True)
class UpstreamData:
    """The result of one upstream job of a workflow."""

    job_name: str
    data: str


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """Logs under ``sx.job``, prefixing each line with the job, instance and task ids (and the workflow
    instance's, for a workflow node).

    With a ``ctx.log_sink`` (set by the worker) each line at INFO or above, or at any level the logger
    is enabled for, also goes to the sink (the instance's online log), whatever the local log level.
    The ids (``extra``) are worked out only for a line the local log takes: a map instance makes a
    context, and may log a line, per subtask.
    """

    def __init__(self, ctx: JobContext) -> None:
        # What LoggerAdapter's __init__ sets, without calling it: one is made per ctx.logger use.
        self.logger = _JOB_LOG
        self.extra = None
        self.ctx = ctx

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(level, msg, args, kwargs)

    # The level methods call ``_emit`` directly (LoggerAdapter's go through ``log``, packing the
    # arguments twice): one frame less on a line that is logged per subtask.
    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.WARNING, msg, args, kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.ERROR, msg, args, kwargs)

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.CRITICAL, msg, args, kwargs)

    def _emit(self, level: int, msg: object, args: tuple[object, ...], kwargs: dict[str, Any]) -> None:
        ctx = self.ctx
        sink = ctx.log_sink
        local = _JOB_LOG.isEnabledFor(level)
        if sink is not None and (level >= logging.INFO or local):
            exc_info = kwargs.get("exc_info") if kwargs else None
            # The usual line, a str formatted with scalars, without a call; anything else as logging does.
            if type(msg) is str and not exc_info and (not args or type(args[0]) in _SCALARS):
                try:
                    text = msg % args if args else msg
                except (TypeError, ValueError, KeyError):
                    text = _line_text(msg, args, None)
            else:
                text = _line_text(msg, args, exc_info)
            sink.write(ctx, level, text)
        if local:
            text, options = self.process(msg, kwargs)
            self.logger.log(level, text, *args, **options)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        ctx = self.ctx
        extra: dict[str, Any] = {
            "sx_job_id": ctx.job_id,
            "sx_job_name": ctx.job_name,
            "sx_instance_id": ctx.instance_id,
            "sx_wf_instance_id": ctx.wf_instance_id,
            "sx_task_id": ctx.task_id,
            "sx_task_name": ctx.task_name,
        }
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        workflow = f" wf_instance={extra['sx_wf_instance_id']}" if extra.get("sx_wf_instance_id") else ""
        ids = f"job={extra['sx_job_id']} instance={extra['sx_instance_id']} task={extra['sx_task_id']}"
        return f"[{ids}{workflow}] {msg}", kwargs


def _line_text(msg: object, args: tuple[object, ...], exc_info: Any) -> str:
    """The message as logging would render it (without the ids prefix), with the traceback if any."""
    text = str(msg)
    if args:
        # As LogRecord.getMessage does, without building a record per line; a bad format is shown, not
        # raised (logging reports it and goes on).
        first = args[0]
        # The common cases first: an ABC isinstance check costs more than the rest of the line.
        by_name = len(args) == 1 and not isinstance(first, (int, str, float)) and isinstance(first, Mapping)
        values: object = first if by_name and first else args
        try:
            text = text % values
        except (TypeError, ValueError, KeyError):
            text = f"{text} {args!r}"
    if exc_info:
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        elif not isinstance(exc_info, tuple):
            exc_info = sys.exc_info()
        if exc_info[0] is not None:
            text = f"{text}\n{''.join(traceback.format_exception(*exc_info)).rstrip()}"
    return text


_SCALARS = frozenset({int, str, float})
_JOB_LOG = logging.getLogger("sx.job")
"""Where ``ctx.logger`` logs (looked up once: a context is made per subtask)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True, eq=False)
class JobContext:
    """Everything a hook knows about the run it belongs to. The worker sets the fields.

    Field names are snake_case; the ``getXxx`` methods are the SchedulerX spellings of the same fields.
    ``schedule_time`` and ``data_time`` are timezone-aware datetimes.
    """

    job_id: int = 0
    job_name: str = ""
    job_type: JobType = JobType.PYTHON
    content: str = ""
    instance_id: int = 0
    wf_instance_id: int = 0
    task_id: int = 0
    task_name: str = ROOT_TASK_NAME
    task: Any = None
    task_payload: bytes = b""
    job_parameters: str = ""
    instance_parameters: str = ""
    schedule_time: datetime = field(default_factory=_now)
    data_time: datetime | None = None
    attempt: int = 0
    max_attempt: int = 0
    task_attempt: int = 0
    task_max_attempt: int = 0
    sharding_id: int = 0
    sharding_num: int = 1
    sharding_parameter: str = ""
    upstream_data: list[UpstreamData] = field(default_factory=list)
    task_results: dict[int, str] = field(default_factory=dict)
    task_statuses: dict[int, TaskStatus] = field(default_factory=dict)
    worker_addr: str = ""
    group_id: str = ""
    namespace: str = ""
    execute_mode: ExecuteMode = ExecuteMode.STANDALONE
    codec: Codec = JSON_CODEC
    mapper: TaskMapper | None = None
    """Where ``map`` sends subtasks; set by the worker for map kinds only."""
    loop: asyncio.AbstractEventLoop | None = None
    """The worker's event loop, which blocking ``map`` calls from worker threads run on."""
    log_sink: LogSink | None = None
    """Where ``logger`` lines go besides the local log (the worker sets it; None in tests)."""
    capture_logs: bool = False
    """The job's ``captureLogs`` option: plain logging and print inside its hooks are shipped too."""

    # A flag under ``_lock`` rather than a threading.Event: a context is made per subtask, and an
    # Event (a Condition and its lock) costs more than the rest of the context.
    _cancelled: bool = field(default=False, init=False, repr=False)
    _cancel_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list, init=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.schedule_time.tzinfo is None:
            raise ValueError(f"schedule_time={self.schedule_time!r}: must be timezone-aware")
        if self.data_time is None:
            self.data_time = self.schedule_time
        elif self.data_time.tzinfo is None:
            raise ValueError(f"data_time={self.data_time!r}: must be timezone-aware")

    # -- state -------------------------------------------------------------------------------------

    @property
    def is_root_task(self) -> bool:
        """True for the root task of a map job (and for every non-map run)."""
        return self.task_name == ROOT_TASK_NAME

    @property
    def is_cancelled(self) -> bool:
        """True once the instance was stopped; long-running hooks should check it and return."""
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise ``sx.processors.CancelledError`` if the instance was stopped."""
        if self._cancelled:
            raise CancelledError(f"instance {self.instance_id} task {self.task_id} was stopped")

    def cancel(self) -> None:
        """Mark the run as stopped (called by the worker); safe from any thread, idempotent."""
        with self._lock:
            self._cancelled = True
            waiters, self._cancel_waiters = self._cancel_waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    async def wait_cancelled(self) -> None:
        """Wait until ``cancel`` is called."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._cancelled:
                return
            self._cancel_waiters.append((loop, future))
        await future

    @property
    def logger(self) -> JobLogger:
        """A logger under ``sx.job`` whose lines carry this run's ids."""
        # Made on each use rather than kept: kept, it and the context would form a reference cycle, and a
        # map instance's contexts (one per subtask) would wait for the cycle collector.
        return JobLogger(self)

    def get_instance_parameters(self) -> str:
        """The parameters of this trigger (API triggers only)."""
        return self.instance_parameters

    # -- map fan-out -------------------------------------------------------------------------------

    def map(self, items: Sequence[Any], task_name: str) -> None:
        """Fan ``items`` out as subtasks called ``task_name``; blocks until the worker accepted them.

        For sync hooks (which run in worker threads). Async hooks use ``await ctx.map_async``.
        """
        mapper, payloads = self._prepare_map(items, task_name)
        loop = self.loop
        if loop is None:
            raise RuntimeError("ctx.map: this context has no event loop; run the hook through the worker")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            raise RuntimeError(
                "ctx.map blocks and cannot be called on the event loop thread; use `await ctx.map_async(...)`"
            )
        asyncio.run_coroutine_threadsafe(mapper.map(self, payloads, task_name), loop).result()

    async def map_async(self, items: Sequence[Any], task_name: str) -> None:
        """Fan ``items`` out as subtasks called ``task_name`` (for async hooks)."""
        mapper, payloads = self._prepare_map(items, task_name)
        await mapper.map(self, payloads, task_name)

    def _prepare_map(self, items: Sequence[Any], task_name: str) -> tuple[TaskMapper, list[bytes]]:
        if self.mapper is None:
            raise RuntimeError(
                f"ctx.map: job {self.job_name!r} runs in mode {self.execute_mode.value} and cannot map; "
                "subclass MapProcessor or MapReduceProcessor and use mode parallel, grid or batch"
            )
        if not isinstance(task_name, str) or not task_name.strip():
            raise PayloadError(f"task_name={task_name!r}: a mapped task needs a non-empty name")
        if task_name in _RESERVED_TASK_NAMES:
            raise PayloadError(f"task_name={task_name!r}: the name is reserved, choose another")
        if isinstance(items, (str, bytes, bytearray)) or not isinstance(items, Sequence):
            raise PayloadError(f"ctx.map({task_name!r}): items must be a list, got {type(items).__name__}")
        if len(items) == 0:
            raise PayloadError(f"ctx.map({task_name!r}): the task list is empty")
        payloads: list[bytes] = []
        for index, item in enumerate(items):
            try:
                data = self.codec.encode(item)
            except PayloadError as exc:
                raise PayloadError(f"ctx.map({task_name!r}): item {index}: {exc}") from exc
            if len(data) > MAX_PAYLOAD_BYTES:
                raise PayloadError(
                    f"ctx.map({task_name!r}): item {index} encodes to {len(data)} bytes, over the "
                    f"{MAX_PAYLOAD_BYTES}-byte payload limit; map smaller items (e.g. ids or ranges)"
                )
            payloads.append(data)
        return self.mapper, payloads

    # -- SchedulerX spellings ----------------------------------------------------------------------

    def getInstanceParameters(self) -> str:
        return self.instance_parameters

    def getJobParameters(self) -> str:
        return self.job_parameters

    def getTaskName(self) -> str:
        return self.task_name

    def getTask(self) -> Any:
        return self.task

    def getTaskId(self) -> int:
        return self.task_id

    def getJobId(self) -> int:
        return self.job_id

    def getJobInstanceId(self) -> int:
        return self.instance_id

    def getWfInstanceId(self) -> int:
        return self.wf_instance_id

    def getShardingId(self) -> int:
        return self.sharding_id

    def getShardingNum(self) -> int:
        return self.sharding_num

    def getShardingParameter(self) -> str:
        return self.sharding_parameter

    def getUpstreamData(self) -> list[UpstreamData]:
        return self.upstream_data

    def getScheduleTime(self) -> datetime:
        return self.schedule_time

    def getDataTime(self) -> datetime:
        assert self.data_time is not None  # set in __post_init__
        return self.data_time

    def getAttempt(self) -> int:
        return self.attempt

    def getMaxAttempt(self) -> int:
        return self.max_attempt

    def getTaskAttempt(self) -> int:
        return self.task_attempt

    def getTaskMaxAttempt(self) -> int:
        return self.task_max_attempt

    def getTaskResults(self) -> dict[int, str]:
        return self.task_results

    def getTaskStatuses(self) -> dict[int, TaskStatus]:
        return self.task_statuses

    def getJobName(self) -> str:
        return self.job_name


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_current: ContextVar[JobContext | None] = ContextVar("sx_job_context", default=None)


def current_context() -> JobContext:
    """The context of the hook running now; raises ``RuntimeError`` outside a hook."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("no job context: current_context() was called outside a processor hook")
    return ctx


def get_current_context() -> JobContext | None:
    """The context of the hook running now, or None outside a hook."""
    return _current.get()
