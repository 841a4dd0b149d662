"""The scheduler's store: one interface, implemented for SQLite (embedded) and PostgreSQL (teams).

Everything the scheduler must not lose lives here: namespaces, groups, access keys, jobs with their
persisted next fire time, instances, calendars and alarm records. Methods that must be atomic across
several rows (firing a trigger, moving an instance between statuses) are single methods, so every
implementation can run them in one transaction and several scheduler replicas can share one store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, TypeVar

from sx.processors._enums import InstanceStatus, TaskStatus, TimeType, TriggerType
from sx.processors._schedule import Schedule
from sx.processors._spec import JobSpec


class StoreError(Exception):
    """Base of the store's own errors."""


class DuplicateError(StoreError):
    """A row with the same unique key exists (a job name in a group, a namespace id, ...)."""


class NotFoundError(StoreError):
    """The row an update names does not exist."""


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


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int


class Store(ABC):
    """The scheduler's durable state. All datetimes are timezone-aware UTC."""

    @abstractmethod
    async def start(self) -> None:
        """Open connections and bring the schema up to date (Alembic migrations)."""

    @abstractmethod
    async def close(self) -> None: ...

    # -- namespaces, groups, access keys ------------------------------------------------------
    @abstractmethod
    async def create_namespace(self, namespace: Namespace) -> Namespace: ...

    @abstractmethod
    async def get_namespace(self, namespace_id: str) -> Namespace | None: ...

    @abstractmethod
    async def list_namespaces(self) -> list[Namespace]: ...

    @abstractmethod
    async def create_group(self, group: Group) -> Group: ...

    @abstractmethod
    async def get_group(self, namespace: str, group_id: str) -> Group | None: ...

    async def get_namespace_and_group(
        self, namespace: str, group_id: str
    ) -> tuple[Namespace | None, Group | None]:
        """The namespace and its group (each None when missing; the group is None when the namespace
        is). A store may answer in one look-up; this default asks twice."""
        found = await self.get_namespace(namespace)
        if found is None:
            return None, None
        return found, await self.get_group(namespace, group_id)

    @abstractmethod
    async def list_groups(self, namespace: str) -> list[Group]: ...

    @abstractmethod
    async def create_access_key(self, key: AccessKey) -> AccessKey: ...

    @abstractmethod
    async def get_access_key(self, key_id: str) -> AccessKey | None: ...

    @abstractmethod
    async def list_access_keys(self, namespace: str | None = None) -> list[AccessKey]: ...

    @abstractmethod
    async def has_access_keys(self) -> bool:
        """Whether any access key exists (enabled or not); one cheap look-up."""

    @abstractmethod
    async def delete_access_key(self, key_id: str) -> bool: ...

    @abstractmethod
    async def remember_nonce(self, nonce: str, expires_at: datetime) -> bool:
        """Record a request nonce; False when it was seen before and has not expired (a replay)."""

    # -- jobs -----------------------------------------------------------------------------------
    @abstractmethod
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
        """Raises DuplicateError when the group has a job of that name."""

    @abstractmethod
    async def get_job(self, job_id: int) -> Job | None: ...

    @abstractmethod
    async def find_job(self, namespace: str, group_id: str, name: str) -> Job | None: ...

    @abstractmethod
    async def list_jobs(
        self,
        namespace: str,
        group_id: str,
        *,
        name_contains: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[Job]:
        """Jobs of a group ordered by id."""

    @abstractmethod
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
        """Raises NotFoundError, or DuplicateError when a rename collides."""

    @abstractmethod
    async def delete_job(self, job_id: int) -> bool:
        """Delete a job and its instances' history; False when it did not exist."""

    # -- the trigger engine ---------------------------------------------------------------------
    @abstractmethod
    async def next_due_time(self) -> datetime | None:
        """The earliest next_fire_time among enabled jobs (an index look-up, not a scan)."""

    @abstractmethod
    async def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        """Enabled jobs whose next_fire_time <= now, earliest first."""

    @abstractmethod
    async def claim_fires(self, fires: Sequence[Fire]) -> list[Instance | None]:
        """Atomically, per fire: move the job's next_fire_time from ``due`` to the new value only if it
        still is ``due`` (another replica may have claimed it), and create the fire's instance. Returns,
        in order, the created instance, or None where the claim lost or no instance was asked for."""

    # -- instances ------------------------------------------------------------------------------
    @abstractmethod
    async def create_instance(self, new: NewInstance) -> Instance: ...

    @abstractmethod
    async def get_instance(self, instance_id: int) -> Instance | None: ...

    @abstractmethod
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
        """A job's instances, newest first; since/until bound schedule_time."""

    @abstractmethod
    async def instances_with_status(
        self, statuses: Sequence[InstanceStatus], *, limit: int = 1000, group_id: str | None = None
    ) -> list[Instance]:
        """Instances in these statuses across all jobs, oldest first (dispatch, recovery, timeouts)."""

    @abstractmethod
    async def update_instance(
        self,
        instance_id: int,
        change: InstanceChange,
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
    ) -> Instance | None:
        """Apply a change; with only_if_status, only when the instance is in one of those statuses
        (compare-and-set). Returns the updated instance, or None when it is missing or the guard failed."""

    async def update_instances(
        self,
        changes: Sequence[tuple[int, InstanceChange]],
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
    ) -> dict[int, Instance | None]:
        """``update_instance`` for many instances at once (one transaction where the store can), each
        with the same guard; maps every id to its updated instance or None."""
        return {
            instance_id: await self.update_instance(instance_id, change, only_if_status=only_if_status)
            for instance_id, change in changes
        }

    @abstractmethod
    async def count_active_instances(self, job_id: int) -> int:
        """Instances of the job that are waiting, ready or running (for maxConcurrency)."""

    @abstractmethod
    async def count_active_instances_by_job(self, job_ids: Sequence[int]) -> dict[int, int]:
        """Active instances of many jobs in one query (the trigger engine's maxConcurrency check);
        jobs with none may be left out."""

    @abstractmethod
    async def find_retry(self, instance_id: int) -> Instance | None:
        """The instance created as the retry of this one, if any."""

    @abstractmethod
    async def prune_instances(self, job_id: int, keep: int) -> int:
        """Delete the job's finished instances beyond the newest ``keep``; returns how many.
        ``keep`` of 0 or less keeps them all (deletes nothing)."""

    # -- calendars and alarms -------------------------------------------------------------------
    @abstractmethod
    async def put_calendar(self, calendar: Calendar) -> Calendar:
        """Create or replace a calendar."""

    @abstractmethod
    async def get_calendar(self, namespace: str, name: str) -> Calendar | None: ...

    @abstractmethod
    async def list_calendars(self, namespace: str) -> list[Calendar]: ...

    @abstractmethod
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
    ) -> Alarm: ...

    @abstractmethod
    async def list_alarms(self, *, job_id: int | None = None, limit: int = 100) -> list[Alarm]: ...

    # -- workflows --------------------------------------------------------------------------------
    @abstractmethod
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
        """Raises DuplicateError when the group has a workflow of that name."""

    @abstractmethod
    async def get_workflow(self, workflow_id: int) -> Workflow | None: ...

    @abstractmethod
    async def find_workflow(self, namespace: str, group_id: str, name: str) -> Workflow | None: ...

    @abstractmethod
    async def list_workflows(
        self, namespace: str, group_id: str, *, offset: int = 0, limit: int = 50
    ) -> Page[Workflow]:
        """Workflows of a group ordered by id."""

    @abstractmethod
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
        """Raises NotFoundError, or DuplicateError when a rename collides."""

    @abstractmethod
    async def delete_workflow(self, workflow_id: int) -> bool:
        """Delete a workflow with its instances' records; False when it did not exist."""

    @abstractmethod
    async def next_workflow_due_time(self) -> datetime | None:
        """The earliest next_fire_time among enabled workflows."""

    @abstractmethod
    async def due_workflows(self, now: datetime, limit: int) -> list[Workflow]:
        """Enabled workflows whose next_fire_time <= now, earliest first."""

    @abstractmethod
    async def claim_workflow_fire(self, fire: WorkflowFire) -> WorkflowInstance | None:
        """Atomically move the workflow's next_fire_time from ``due`` on (only if it still is ``due``)
        and create the fire's instance; None when the claim lost or no instance was asked for."""

    @abstractmethod
    async def create_workflow_instance(self, new: NewWorkflowInstance) -> WorkflowInstance: ...

    @abstractmethod
    async def get_workflow_instance(self, wf_instance_id: int) -> WorkflowInstance | None: ...

    @abstractmethod
    async def list_workflow_instances(
        self,
        workflow_id: int,
        *,
        statuses: Sequence[InstanceStatus] | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> Page[WorkflowInstance]:
        """A workflow's instances, newest first."""

    @abstractmethod
    async def active_workflow_instance_ids(self, *, limit: int = 10_000) -> list[int]:
        """Ids of the workflow instances of every workflow still WAITING or RUNNING, oldest first."""

    @abstractmethod
    async def update_workflow_instance(
        self,
        wf_instance_id: int,
        *,
        status: InstanceStatus,
        end_time: datetime | None = None,
        result: str | None = None,
        only_if_status: Sequence[InstanceStatus] | None = None,
    ) -> WorkflowInstance | None:
        """Set the status (compare-and-set with only_if_status); end_time None clears it. None when
        missing or the guard failed."""

    @abstractmethod
    async def start_workflow_node(
        self, wf_instance_id: int, job_id: int, new: NewInstance, *, rerun: bool = False
    ) -> Instance | None:
        """In one transaction, create the node's instance and record it as the node's current one.
        A first start fails (None) when the node already started; a re-run (``rerun``) only when the
        node is FAILED (None otherwise), so concurrent callers start a node once."""

    @abstractmethod
    async def list_workflow_nodes(self, wf_instance_id: int) -> list[WorkflowNode]:
        """The started nodes of a workflow instance."""

    @abstractmethod
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
        """Change a node only while ``only_if_instance`` is its current instance; None otherwise."""

    # -- subtasks of parallel instances --------------------------------------------------------------
    @abstractmethod
    async def create_tasks(self, instance_id: int, tasks: Sequence[NewTask]) -> int:
        """Store new INIT tasks; a task id the instance has already is skipped. Returns how many
        were created. NotFoundError when the instance does not exist."""

    @abstractmethod
    async def update_task_statuses(self, instance_id: int, changes: Sequence[TaskStatusChange]) -> int:
        """Apply status changes (see TaskStatusChange); returns how many tasks changed."""

    @abstractmethod
    async def list_tasks(
        self,
        instance_id: int,
        *,
        statuses: Sequence[TaskStatus] | None = None,
        task_ids: Sequence[int] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[Task]:
        """The instance's tasks by task id, optionally only these statuses or ids."""

    @abstractmethod
    async def count_tasks(self, instance_id: int) -> dict[TaskStatus, int]:
        """How many tasks of the instance have each status (statuses with none are left out)."""

    @abstractmethod
    async def reset_tasks(
        self, instance_id: int, task_ids: Sequence[int], *, only_if_status: Sequence[TaskStatus]
    ) -> list[int]:
        """Put these tasks back to INIT (result, worker and times cleared) when their status is one of
        ``only_if_status``; returns the ids that were reset."""

    @abstractmethod
    async def copy_tasks(self, from_instance_id: int, to_instance_id: int) -> int:
        """Give a retry instance its predecessor's tasks: SUCCESS ones as they are, the others INIT.
        Does nothing (0) when the target has tasks already; returns how many were copied."""
