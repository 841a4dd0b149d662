"""The store's interfaces: one small protocol per kind of record, and ``Store``, all of them at once.

Everything the scheduler must not lose lives behind them: namespaces, groups, access keys, jobs with
their persisted next fire time, instances, calendars and alarm records, workflows and the subtasks of
parallel instances. Methods that must be atomic across several rows (firing a trigger, moving an
instance between statuses) are single methods, so every implementation can run them in one
transaction and several scheduler replicas can share one store.

Each protocol is shaped around what its callers do, so a component can ask for just the part it uses,
and combine parts structurally, e.g. ``class TriggerStore(JobStore, InstanceStore, CalendarStore,
Protocol)``. ``Store`` (an ABC) is every part plus ``start``/``close``; ``sql.SqlStore`` implements it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sx.processors import ExecuteMode, InstanceStatus, JobSpec, TaskStatus, TimeType, TriggerType
from sx.scheduler.store._backfills import BackfillStore
from sx.scheduler.store._records import (
    AccessKey,
    Alarm,
    Calendar,
    Fence,
    Fire,
    Group,
    GroupLease,
    Instance,
    InstanceChange,
    Job,
    LogLine,
    Namespace,
    NewInstance,
    NewLogLines,
    NewTask,
    NewWorkflowInstance,
    Page,
    SchedulerReplica,
    Task,
    TaskStatusChange,
    Workflow,
    WorkflowDef,
    WorkflowFire,
    WorkflowInstance,
    WorkflowNode,
)

__all__ = [
    "AccessStore",
    "AlarmStore",
    "CalendarStore",
    "InstanceLogStore",
    "InstanceStore",
    "JobStore",
    "LeaseStore",
    "ParallelTaskStore",
    "Store",
    "WorkflowStore",
]


class AccessStore(Protocol):
    """Namespaces, groups, access keys and request nonces: what the OpenAPI needs to authenticate
    and scope a call."""

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


class JobStore(Protocol):
    """Jobs and the trigger engine's view of them: the persisted next fire time, the due jobs, and
    claiming their fires."""

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
        enabled: bool | None = None,
        time_type: TimeType | None = None,
        execute_mode: ExecuteMode | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[Job]:
        """Jobs of a group ordered by id; each filter given keeps only the jobs matching it."""

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

    # -- the trigger engine ----------------------------------------------------------------------------------
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


class InstanceStore(Protocol):
    """Job instances: created by triggers, moved through their statuses by dispatch, retried,
    timed out and pruned."""

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
    async def list_group_instances(
        self,
        namespace: str,
        group_id: str,
        *,
        job_id: int | None = None,
        statuses: Sequence[InstanceStatus] | None = None,
        trigger_types: Sequence[TriggerType] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 10,
    ) -> Page[Instance]:
        """A group's instances across its jobs (or one job's), newest first; each filter given keeps
        only the instances matching it; since/until bound schedule_time."""

    @abstractmethod
    async def instances_with_status(
        self,
        statuses: Sequence[InstanceStatus],
        *,
        limit: int = 1000,
        group_id: str | None = None,
        namespace: str | None = None,
    ) -> list[Instance]:
        """Instances in these statuses across all jobs (or one namespace, one group), oldest first
        (dispatch, recovery, timeouts)."""

    @abstractmethod
    async def update_instance(
        self,
        instance_id: int,
        change: InstanceChange,
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
        fence: Fence | None = None,
    ) -> Instance | None:
        """Apply a change; with only_if_status, only when the instance is in one of those statuses
        (compare-and-set). Returns the updated instance, or None when it is missing or the guard failed.
        With ``fence``, raises `FencedError` (writing nothing) unless the fence's tokens hold the lease
        of the instance's group (a store that alone writes its database, which no other scheduler
        shares, need not check)."""

    async def update_instances(
        self,
        changes: Sequence[tuple[int, InstanceChange]],
        *,
        only_if_status: Sequence[InstanceStatus] | None = None,
        fence: Fence | None = None,
    ) -> dict[int, Instance | None]:
        """``update_instance`` for many instances at once (one transaction where the store can), each
        with the same guard and fence; maps every id to its updated instance or None."""
        return {
            instance_id: await self.update_instance(
                instance_id, change, only_if_status=only_if_status, fence=fence
            )
            for instance_id, change in changes
        }

    @abstractmethod
    async def count_active_instances(self, job_id: int) -> int:
        """Instances of the job that are waiting, ready or running (for maxConcurrency); backfill
        instances (trigger type 2) are left out: a backfill keeps its own concurrency."""

    @abstractmethod
    async def active_instances_below(self, job_id: int, limit: int) -> bool:
        """Whether the job has fewer than ``limit`` active instances, counted as in
        ``count_active_instances`` (a store may answer without counting them all)."""

    @abstractmethod
    async def count_active_instances_by_job(self, job_ids: Sequence[int]) -> dict[int, int]:
        """Active instances of many jobs in one query (the trigger engine's maxConcurrency check),
        backfill instances left out as in ``count_active_instances``; jobs with none may be left out."""

    @abstractmethod
    async def find_retry(self, instance_id: int) -> Instance | None:
        """The instance created as the retry of this one, if any."""

    @abstractmethod
    async def prune_instances(self, job_id: int, keep: int) -> int:
        """Delete the job's finished instances beyond the newest ``keep``; returns how many.
        ``keep`` of 0 or less keeps them all (deletes nothing)."""


class CalendarStore(Protocol):
    """Named calendars of days (a cron schedule may include or exclude them)."""

    @abstractmethod
    async def put_calendar(self, calendar: Calendar) -> Calendar:
        """Create or replace a calendar."""

    @abstractmethod
    async def get_calendar(self, namespace: str, name: str) -> Calendar | None: ...

    @abstractmethod
    async def list_calendars(self, namespace: str) -> list[Calendar]: ...


class AlarmStore(Protocol):
    """The record of every alarm raised (timeouts and failures) and whether it was delivered."""

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

    @abstractmethod
    async def page_alarms(
        self,
        namespace: str,
        group_id: str,
        *,
        job_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        delivered: bool | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> Page[Alarm]:
        """A group's alarms, newest first, with ``since <= created_at <= until`` (the alarm history)."""


class WorkflowStore(Protocol):
    """Workflows (DAGs of jobs) with their fires, their instances and the nodes those started."""

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

    # -- fires -----------------------------------------------------------------------------------------------
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

    # -- workflow instances ----------------------------------------------------------------------------------
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

    # -- nodes -----------------------------------------------------------------------------------------------
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


class ParallelTaskStore(Protocol):
    """The subtasks of parallel-mode instances, which the scheduler keeps for their masters (not the
    worker's map TaskStore)."""

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


class LeaseStore(Protocol):
    """Scheduler replicas and group leases: which replica dispatches which group (namespace + group).

    A replica checks in every few seconds; each group is leased to one replica at a time, and every
    write its dispatcher makes is fenced by the lease's token (``update_instance(fence=...)``). Signals
    carry news between replicas (an instance created or a stop asked for on one replica reaches the
    group's owner): LISTEN/NOTIFY on PostgreSQL, in-process on SQLite (one scheduler)."""

    @abstractmethod
    async def check_in(self, replica: SchedulerReplica, *, now: datetime, ttl: timedelta) -> None:
        """Record the replica as alive until ``now + ttl`` (its addresses and presence key too)."""

    @abstractmethod
    async def check_out(self, replica_id: str, *, now: datetime) -> None:
        """The replica stops: remove it and give up every lease it holds."""

    @abstractmethod
    async def live_replicas(self, *, now: datetime) -> list[SchedulerReplica]:
        """Replicas whose check-in holds at ``now`` and (on PostgreSQL) whose presence lock is held."""

    @abstractmethod
    async def group_leases(self) -> list[GroupLease]:
        """Every group's lease, held or lapsed."""

    @abstractmethod
    async def take_lease(
        self,
        namespace: str,
        group_id: str,
        *,
        holder: str,
        now: datetime,
        ttl: timedelta,
        replacing: GroupLease | None,
    ) -> GroupLease | None:
        """Take a group's lease with a new token and the next epoch: when it has none (``replacing``
        None), or still exactly as ``replacing`` says (lapsed, or its holder gone). None when it moved
        meanwhile. Waits for writes fenced by the old token to commit."""

    @abstractmethod
    async def renew_leases(
        self, holder: str, tokens: Sequence[str], *, now: datetime, ttl: timedelta, workers: dict[str, str]
    ) -> set[str]:
        """Extend the leases held under these tokens that have not lapsed at ``now``; returns the tokens
        renewed (any other is lost). ``workers`` maps a token to its group's worker snapshot (JSON)."""

    @abstractmethod
    async def release_lease(self, token: str, *, now: datetime) -> None:
        """Give up the lease held under ``token`` (hand-over to another replica)."""

    @abstractmethod
    async def attend(self, presence_key: int, on_signal: Callable[[str], None]) -> None:
        """Hold this replica's presence (on PostgreSQL an advisory lock on a connection of its own, freed
        by the server the moment the process dies) and call ``on_signal(payload)`` for every signal,
        until ``close``. Called again after the connection was lost, it re-opens it."""

    @abstractmethod
    async def attending(self) -> bool:
        """Whether the presence (and signal) connection is open."""

    @abstractmethod
    async def signal(self, payload: str) -> None:
        """Send a signal to every replica attending (this one included)."""

    @abstractmethod
    async def request_stop(self, instance_id: int, reason: str, *, now: datetime) -> None:
        """Keep a stop asked for on a replica that does not dispatch the instance's group (the latest
        reason wins), for the group's next owner should the current one stop or die before applying
        its signal. Gone with the instance."""

    @abstractmethod
    async def stop_requests(self, namespace: str, group_id: str) -> list[tuple[int, str]]:
        """The kept stop requests (instance id, reason) of the group's unfinished instances."""


class InstanceLogStore(Protocol):
    """The instances' online logs: the lines workers ship, bounded per instance, gone with the instance."""

    @abstractmethod
    async def append_instance_logs(
        self, namespace: str, group_id: str, lines: Sequence[NewLogLines], *, max_lines: int
    ) -> int:
        """Store ``lines`` (of any instances) in one transaction, numbered in order after each
        instance's last line; returns how many lines were stored (ValueError for columns of different
        lengths). Lines of an instance that does not exist
        (any more) or is not of this group are dropped. An instance keeps at most ``max_lines`` lines:
        what comes later is counted in one line after them, "truncated: N lines dropped"."""

    @abstractmethod
    async def read_instance_log(
        self,
        instance_id: int,
        *,
        after: int = 0,
        limit: int = 100,
        min_level: int = 0,
        task_id: int | None = None,
        task_name: str | None = None,
    ) -> list[LogLine]:
        """The instance's lines with ``seq`` above ``after``, in order: at most ``limit``, at
        ``min_level`` or above, of one subtask (id, name) when given."""


class Store(
    AccessStore,
    JobStore,
    InstanceStore,
    CalendarStore,
    AlarmStore,
    WorkflowStore,
    ParallelTaskStore,
    BackfillStore,
    LeaseStore,
    InstanceLogStore,
    ABC,
):
    """The scheduler's durable state: every kind of record, and the connections to open and close.

    All datetimes are timezone-aware UTC.
    """

    @abstractmethod
    async def start(self) -> None:
        """Open connections and bring the schema up to date (Alembic migrations)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """One round trip to the database (for readiness); raises when it cannot be made."""
