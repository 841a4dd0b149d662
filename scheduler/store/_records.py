"""The scheduler's records: what the store keeps and returns, as frozen dataclasses (a new log line, of
which there are many, as a named tuple).

Records come back from the store (``Job``, ``Instance``, ...) or go in to ask for a row (``NewInstance``,
``Fire``, ``NewTask``, ...). All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar

from sx.processors import InstanceStatus, JobSpec, Schedule, TaskStatus, TimeType, TriggerType

__all__ = [
    "AccessKey",
    "Alarm",
    "Calendar",
    "Fence",
    "Fire",
    "Group",
    "GroupLease",
    "Instance",
    "InstanceChange",
    "Job",
    "LogLine",
    "Namespace",
    "NewInstance",
    "NewLogLines",
    "NewTask",
    "NewWorkflowInstance",
    "Page",
    "SchedulerReplica",
    "Task",
    "TaskStatusChange",
    "Workflow",
    "WorkflowDef",
    "WorkflowFire",
    "WorkflowInstance",
    "WorkflowNode",
]


@dataclass(frozen=True, slots=True)
class Namespace:
    id: str
    name: str
    description: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Group:
    namespace: str
    group_id: str
    app_key: str
    description: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AccessKey:
    key_id: str
    secret: str
    namespace: str
    enabled: bool = True
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    namespace: str
    group_id: str
    spec: JobSpec
    enabled: bool
    managed: bool
    """Created by `sx-worker sync`: only such jobs may be pruned by it."""
    next_fire_time: datetime | None
    """When the trigger engine fires the job next (UTC); None for api jobs and disabled ones."""
    namespace_source: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class NewInstance:
    """What a trigger (or ExecuteJob, or a retry) asks the store to create."""

    job_id: int
    namespace: str
    group_id: str
    status: InstanceStatus
    trigger_type: TriggerType
    time_type: TimeType
    schedule_time: datetime
    data_time: datetime
    attempt: int = 0
    instance_parameters: str = ""
    wf_instance_id: int | None = None
    result: str = ""
    """Set for instances created already finished, e.g. REJECTED with its reason."""
    retry_of: int | None = None
    """The instance this one retries (maxAttempt), so a retry is created at most once."""
    upstream_data: tuple[tuple[str, str], ...] = ()
    """Workflow nodes: (job name, result) of each upstream job, handed to the processor."""
    rerun_of: int | None = None
    """A manual re-run (trigger type 4): the finished instance it runs again."""


@dataclass(frozen=True, slots=True)
class Instance:
    id: int
    job_id: int
    namespace: str
    group_id: str
    status: InstanceStatus
    trigger_type: TriggerType
    time_type: TimeType
    schedule_time: datetime
    data_time: datetime
    created_at: datetime
    attempt: int = 0
    instance_parameters: str = ""
    wf_instance_id: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    worker_id: str = ""
    worker_addr: str = ""
    executor: str = ""
    result: str = ""
    progress: str = ""
    retry_of: int | None = None
    timeout_alarmed: bool = False
    upstream_data: tuple[tuple[str, str], ...] = ()
    rerun_of: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceChange:
    """Fields to set on an instance; None leaves a field as it is."""

    status: InstanceStatus | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    worker_id: str | None = None
    worker_addr: str | None = None
    executor: str | None = None
    result: str | None = None
    progress: str | None = None
    timeout_alarmed: bool | None = None


@dataclass(frozen=True, slots=True)
class Calendar:
    namespace: str
    name: str
    days: frozenset[date]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Alarm:
    id: int
    namespace: str
    group_id: str
    job_id: int
    instance_id: int | None
    kind: str
    """``timeout`` or ``failure``."""
    channel: str
    message: str
    delivered: bool
    created_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fire:
    """One due trigger the engine claims: the job's fire at ``due`` moves on to ``next_fire_time``."""

    job_id: int
    due: datetime
    next_fire_time: datetime | None
    instance: NewInstance | None
    """None records the claim without creating an instance (a skipped misfire)."""


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    """A stored workflow's definition: its schedule and graph of job ids (edges upstream -> downstream)."""

    name: str
    schedule: Schedule
    nodes: tuple[int, ...]
    edges: tuple[tuple[int, int], ...] = ()
    description: str = ""
    time_zone: str = ""


@dataclass(frozen=True, slots=True)
class Workflow:
    id: int
    namespace: str
    group_id: str
    definition: WorkflowDef
    enabled: bool
    managed: bool
    next_fire_time: datetime | None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.definition.name


@dataclass(frozen=True, slots=True)
class NewWorkflowInstance:
    """What a trigger or ExecuteWorkflow asks the store to create; the graph is a snapshot."""

    workflow_id: int
    namespace: str
    group_id: str
    status: InstanceStatus
    trigger_type: TriggerType
    schedule_time: datetime
    nodes: tuple[int, ...]
    edges: tuple[tuple[int, int], ...] = ()
    instance_parameters: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowInstance:
    id: int
    workflow_id: int
    namespace: str
    group_id: str
    status: InstanceStatus
    trigger_type: TriggerType
    schedule_time: datetime
    nodes: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]
    created_at: datetime
    instance_parameters: str = ""
    end_time: datetime | None = None
    result: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowNode:
    """One job of a workflow instance once it started: its current instance (retries and re-runs
    move it on) and, once final, its status and result."""

    wf_instance_id: int
    job_id: int
    instance_id: int
    status: InstanceStatus
    result: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowFire:
    """One due workflow trigger: move ``due`` to ``next_fire_time`` and create ``instance`` (if any)."""

    workflow_id: int
    due: datetime
    next_fire_time: datetime | None
    instance: NewWorkflowInstance | None


@dataclass(frozen=True, slots=True)
class NewTask:
    """A subtask of a parallel instance as its master creates it."""

    task_id: int
    name: str
    payload: bytes = b""
    parent_id: int = 0
    """The task that mapped it (0: the root)."""
    batch_seq: int = 0
    """The mapper's batch number: (parent_id, batch_seq) identifies one map batch."""


@dataclass(frozen=True, slots=True)
class Task:
    """A stored subtask of a parallel instance; ``attempt`` counts how often it was dispatched."""

    instance_id: int
    task_id: int
    name: str
    status: TaskStatus
    payload: bytes = b""
    parent_id: int = 0
    batch_seq: int = 0
    worker_id: str = ""
    worker_addr: str = ""
    attempt: int = 0
    result: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskStatusChange:
    """Tasks moving to one status on one worker. ``results`` pairs with ``task_ids`` (or is empty).

    PULLED records the worker and counts an attempt; RUNNING sets the start time; SUCCESS and FAILED
    set the result and end time. A finished task is never moved by a change (only ``reset_tasks``)."""

    status: TaskStatus
    task_ids: tuple[int, ...]
    results: tuple[str, ...] = ()
    worker_id: str = ""
    worker_addr: str = ""


@dataclass(frozen=True, slots=True)
class NewLogLines:
    """Lines of one instance that one worker shipped, for the instance's online log, column by column
    (one entry per line in each, in the order logged): a worker ships thousands of lines a second, and
    columns go into the store without a Python object per line. ``times_ms``: when each was logged, in
    epoch milliseconds (what workers send); ``levels``: Python logging level numbers (20 INFO, 30
    WARNING, ...); ``task_ids`` and ``task_names``: in the map modes, the subtask that logged each (0 and
    "" otherwise); ``worker_id``: "" for a line the scheduler wrote (a count of dropped lines).

    ``packed``: these very lines as the worker's ``LogBatch`` message, when it holds nothing else; the
    store keeps those bytes as they came rather than encode the columns again (storing a line then
    makes no Python object for it)."""

    instance_id: int
    worker_id: str
    times_ms: Sequence[int]
    levels: Sequence[int]
    messages: Sequence[str]
    task_ids: Sequence[int]
    task_names: Sequence[str]
    packed: bytes | None = None

    def __len__(self) -> int:
        return len(self.messages)

    def check(self) -> None:
        """ValueError when the columns are not all of one length."""
        count = len(self.messages)
        for name in ("times_ms", "levels", "task_ids", "task_names"):
            if len(getattr(self, name)) != count:
                raise ValueError(f"{name}: {len(getattr(self, name))} values for {count} messages")


@dataclass(frozen=True, slots=True)
class LogLine:
    """A stored line of an instance's log; ``seq`` numbers the instance's lines from 1 in arrival order."""

    instance_id: int
    seq: int
    time_ms: int
    level: int
    worker_id: str
    message: str
    task_id: int = 0
    task_name: str = ""

    @property
    def time(self) -> datetime:
        """When it was logged (UTC)."""
        return datetime.fromtimestamp(self.time_ms / 1000, UTC)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int


@dataclass(frozen=True, slots=True)
class SchedulerReplica:
    """A scheduler process sharing the store: where its workers and API callers reach it, and until
    when its last check-in holds (it checks in every few seconds while it runs)."""

    replica_id: str
    grpc_address: str
    http_url: str
    presence_key: int
    """The key of the PostgreSQL advisory lock its presence connection holds: free means it is gone."""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class GroupLease:
    """Which scheduler dispatches a group (namespace + group id), under which token, and until when.

    ``epoch`` counts the owners the group has had; ``token`` is unique to one holding of the lease, so
    a write fenced with a token from before a loss of the lease is refused even by the same replica.
    ``workers`` is the owner's last snapshot of the group's connected workers (JSON), for the other
    replicas' listings. ``renewed_at`` is when its holder last renewed it (None for leases stored
    before it was recorded)."""

    namespace: str
    group_id: str
    holder: str
    token: str
    epoch: int
    expires_at: datetime
    acquired_at: datetime
    workers: str = "[]"
    renewed_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.group_id)


@dataclass(frozen=True, slots=True)
class Fence:
    """What a fenced write proves: its writer holds, at ``now``, a lease of the written instance's group
    under one of ``tokens`` (see `GroupLease`)."""

    tokens: frozenset[str]
    now: datetime
