"""Conversions between the wire messages (sx.protos) and the processors' types (JobContext, results)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sx.processors import (
    ROOT_TASK_NAME,
    Codec,
    ExecuteMode,
    InstanceStatus,
    JobContext,
    JobType,
    TaskMapper,
    TaskStatus,
    UpstreamData,
)
from sx.processors.engine import JSON_CODEC
from sx.protos.v1 import common_pb2, peer_pb2, scheduler_pb2

__all__ = [
    "ContextFactory",
    "TaskInfo",
    "context_for",
    "datetime_to_ms",
    "execute_mode_of",
    "instance_report",
    "job_type_of",
    "ms_to_datetime",
    "now_ms",
]


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds (the wire) to an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    """An aware datetime to epoch milliseconds."""
    return round(value.timestamp() * 1000)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def execute_mode_of(spec: common_pb2.InstanceSpec) -> ExecuteMode:
    """The spec's execute mode; an empty one means standalone. Raises ValueError naming the value."""
    if not spec.execute_mode:
        return ExecuteMode.STANDALONE
    try:
        return ExecuteMode.parse(spec.execute_mode)
    except ValueError:
        raise ValueError(
            f"execute_mode={spec.execute_mode!r} of instance {spec.instance_id} is not one of "
            f"{', '.join(m.value for m in ExecuteMode)}"
        ) from None


def job_type_of(spec: common_pb2.InstanceSpec) -> JobType:
    """The spec's job type; an empty one means python. Raises ValueError naming the value."""
    if not spec.job_type:
        return JobType.PYTHON
    try:
        return JobType(spec.job_type.strip().lower())
    except ValueError:
        raise ValueError(
            f"job_type={spec.job_type!r} of instance {spec.instance_id} is not one of "
            f"{', '.join(t.value for t in JobType)}"
        ) from None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """The task part of a context: which task of the instance a hook runs for."""

    task_id: int = 0
    task_name: str = ""
    payload: bytes = b""
    task_attempt: int = 0
    sharding_id: int = 0
    sharding_num: int = 1
    sharding_parameter: str = ""

    @classmethod
    def from_proto(cls, task: peer_pb2.TaskRequest) -> TaskInfo:
        return cls(
            task_id=task.task_id,
            task_name=task.task_name,
            payload=task.payload,
            task_attempt=task.task_attempt,
            sharding_id=task.sharding_id,
            sharding_num=max(task.sharding_num, 1),
        )


def context_for(
    spec: common_pb2.InstanceSpec,
    *,
    worker_addr: str,
    task: TaskInfo | None = None,
    codec: Codec = JSON_CODEC,
    mapper: TaskMapper | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    task_results: dict[int, str] | None = None,
    task_statuses: dict[int, TaskStatus] | None = None,
) -> JobContext:
    """The JobContext a hook of ``spec`` sees; ``task`` is None for instance-level hooks (pre/post)."""
    info = task or TaskInfo()
    schedule_time = ms_to_datetime(spec.schedule_time_ms) if spec.schedule_time_ms else datetime.now(UTC)
    data_time = ms_to_datetime(spec.data_time_ms) if spec.data_time_ms else None
    return JobContext(
        job_id=spec.job_id,
        job_name=spec.job_name,
        job_type=job_type_of(spec),
        content=spec.content,
        instance_id=spec.instance_id,
        wf_instance_id=spec.wf_instance_id,
        task_id=info.task_id,
        task_name=info.task_name or ROOT_TASK_NAME,
        task=codec.decode(info.payload) if info.payload else None,
        task_payload=info.payload,
        job_parameters=spec.parameters,
        instance_parameters=spec.instance_parameters,
        schedule_time=schedule_time,
        data_time=data_time,
        attempt=spec.attempt,
        max_attempt=spec.max_attempt,
        task_attempt=info.task_attempt,
        task_max_attempt=spec.map_options.task_max_attempt if spec.HasField("map_options") else 0,
        sharding_id=info.sharding_id,
        sharding_num=info.sharding_num,
        sharding_parameter=info.sharding_parameter,
        upstream_data=[UpstreamData(job_name=u.job_name, data=u.data) for u in spec.upstream_data],
        task_results=dict(task_results or {}),
        task_statuses=dict(task_statuses or {}),
        worker_addr=worker_addr,
        group_id=spec.group_id,
        namespace=spec.namespace,
        execute_mode=execute_mode_of(spec),
        codec=codec,
        mapper=mapper,
        loop=loop,
        capture_logs=spec.capture_logs,
    )


# The JobContext fields that differ from one task of an instance to the next; the others are worked out
# once per instance (see ContextFactory).
_PER_TASK_FIELDS = frozenset(
    {
        "task_id",
        "task_name",
        "task",
        "task_payload",
        "task_attempt",
        "sharding_id",
        "sharding_num",
        "sharding_parameter",
        "upstream_data",
        "task_results",
        "task_statuses",
        "mapper",
        "loop",
    }
)


_FRESH_PER_CONTEXT = ("task_results", "task_statuses", "_cancel_waiters", "_lock")
"""JobContext's fields that hold a mutable object of each context's own (made anew by ``make``)."""


class ContextFactory:
    """Makes the contexts of one instance's tasks; what comes from the instance is computed once.

    ``context_for`` parses times, enums and options from the spec on every call, which costs more than
    running a no-op subtask; a map instance can have a million tasks. ``make`` does not even call
    JobContext's ``__init__`` (some 35 fields, checked again each time): it fills a new context's
    attributes from the instance's template, then the task's own and the per-context objects.
    """

    def __init__(
        self,
        spec: common_pb2.InstanceSpec,
        *,
        worker_addr: str,
        codec: Codec,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        template = context_for(spec, worker_addr=worker_addr, task=TaskInfo(), codec=codec)
        self._shared = {
            name: value
            for name, value in vars(template).items()
            if name not in _PER_TASK_FIELDS and name not in _FRESH_PER_CONTEXT
        }
        self._upstream = template.upstream_data
        self._codec = codec
        self._loop = loop

    def make(self, info: TaskInfo, *, mapper: TaskMapper) -> JobContext:
        payload = info.payload
        ctx: JobContext = object.__new__(JobContext)
        attributes = vars(ctx)
        attributes.update(self._shared)
        attributes.update(
            task_id=info.task_id,
            task_name=info.task_name or ROOT_TASK_NAME,
            task=self._codec.decode(payload) if payload else None,
            task_payload=payload,
            task_attempt=info.task_attempt,
            sharding_id=info.sharding_id,
            sharding_num=info.sharding_num,
            sharding_parameter=info.sharding_parameter,
            upstream_data=list(self._upstream),
            mapper=mapper,
            loop=self._loop,
            task_results={},
            task_statuses={},
            _cancel_waiters=[],
            _lock=threading.Lock(),
        )
        return ctx


def instance_report(
    spec: common_pb2.InstanceSpec,
    status: InstanceStatus,
    *,
    result: str = "",
    progress: str = "",
    start_time_ms: int = 0,
    end_time_ms: int = 0,
) -> scheduler_pb2.InstanceReport:
    """An InstanceReport without its delivery id (the connection assigns it)."""
    return scheduler_pb2.InstanceReport(
        instance_id=spec.instance_id,
        job_id=spec.job_id,
        status=int(status),
        result=result,
        progress=progress,
        start_time_ms=start_time_ms,
        end_time_ms=end_time_ms,
    )
