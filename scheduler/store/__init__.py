"""The scheduler's records and the store interfaces that hold them (``sql`` implements them).

- ``_records``: the records, frozen dataclasses (``Job``, ``Instance``, ``Fire``, ``Page``, ...).
- ``_errors``: ``StoreError`` and its ``DuplicateError``, ``NotFoundError`` and ``InUseError``.
- one protocol per kind of record: ``_access_store`` (``AccessStore``), ``_job_store`` (``JobStore``,
  ``CalendarStore``), ``_instance_store`` (``InstanceStore``, ``InstanceLogStore``, ``AlarmStore``),
  ``_task_store`` (``ParallelTaskStore``), ``_workflow_store`` (``WorkflowStore``) and ``_lease_store``
  (``LeaseStore``).
- ``_interfaces``: ``Store``, all of them.
- ``_backfills``: backfills (a job re-run over past fire times), their records and ``BackfillStore``.
"""

from sx.scheduler.store._access_store import AccessStore
from sx.scheduler.store._backfills import (
    Backfill,
    BackfillFire,
    BackfillProgress,
    BackfillState,
    BackfillStore,
    FireState,
    NewBackfill,
)
from sx.scheduler.store._errors import (
    DuplicateError,
    FencedError,
    InUseError,
    NotFoundError,
    StoreError,
)
from sx.scheduler.store._instance_store import AlarmStore, InstanceLogStore, InstanceStore
from sx.scheduler.store._interfaces import Store
from sx.scheduler.store._job_store import CalendarStore, JobStore
from sx.scheduler.store._lease_store import LeaseStore
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
from sx.scheduler.store._task_store import ParallelTaskStore
from sx.scheduler.store._workflow_store import WorkflowStore

__all__ = [
    "AccessKey",
    "AccessStore",
    "Alarm",
    "AlarmStore",
    "Backfill",
    "BackfillFire",
    "BackfillProgress",
    "BackfillState",
    "BackfillStore",
    "Calendar",
    "CalendarStore",
    "DuplicateError",
    "Fence",
    "FencedError",
    "Fire",
    "FireState",
    "Group",
    "GroupLease",
    "InUseError",
    "Instance",
    "InstanceChange",
    "InstanceLogStore",
    "InstanceStore",
    "Job",
    "JobStore",
    "LeaseStore",
    "LogLine",
    "Namespace",
    "NewBackfill",
    "NewInstance",
    "NewLogLines",
    "NewTask",
    "NewWorkflowInstance",
    "NotFoundError",
    "Page",
    "ParallelTaskStore",
    "SchedulerReplica",
    "Store",
    "StoreError",
    "Task",
    "TaskStatusChange",
    "Workflow",
    "WorkflowDef",
    "WorkflowFire",
    "WorkflowInstance",
    "WorkflowNode",
    "WorkflowStore",
]
