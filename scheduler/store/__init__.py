"""The scheduler's records and the store interfaces that hold them (``sql`` implements them).

- ``_records``: the records, frozen dataclasses (``Job``, ``Instance``, ``Fire``, ``Page``, ...).
- ``_errors``: ``StoreError`` and its ``DuplicateError``, ``NotFoundError`` and ``InUseError``.
- ``_interfaces``: one protocol per kind of record (``AccessStore``, ``JobStore``, ``InstanceStore``,
  ``CalendarStore``, ``AlarmStore``, ``WorkflowStore``, ``ParallelTaskStore``) and ``Store``, all of them.
"""

from sx.scheduler.store._errors import DuplicateError, InUseError, NotFoundError, StoreError
from sx.scheduler.store._interfaces import (
    AccessStore,
    AlarmStore,
    CalendarStore,
    InstanceStore,
    JobStore,
    ParallelTaskStore,
    Store,
    WorkflowStore,
)
from sx.scheduler.store._records import (
    AccessKey,
    Alarm,
    Calendar,
    Fire,
    Group,
    Instance,
    InstanceChange,
    Job,
    Namespace,
    NewInstance,
    NewTask,
    NewWorkflowInstance,
    Page,
    Task,
    TaskStatusChange,
    Workflow,
    WorkflowDef,
    WorkflowFire,
    WorkflowInstance,
    WorkflowNode,
)

__all__ = [
    "AccessKey",
    "AccessStore",
    "Alarm",
    "AlarmStore",
    "Calendar",
    "CalendarStore",
    "DuplicateError",
    "Fire",
    "Group",
    "InUseError",
    "Instance",
    "InstanceChange",
    "InstanceStore",
    "Job",
    "JobStore",
    "Namespace",
    "NewInstance",
    "NewTask",
    "NewWorkflowInstance",
    "NotFoundError",
    "Page",
    "ParallelTaskStore",
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
