"""The store's interfaces: ``Store``, every small protocol per kind of record at once.

Everything the scheduler must not lose lives behind them: namespaces, groups, access keys, jobs with
their persisted next fire time, instances, calendars and alarm records, workflows and the subtasks of
parallel instances. Methods that must be atomic across several rows (firing a trigger, moving an
instance between statuses) are single methods, so every implementation can run them in one
transaction and several scheduler replicas can share one store.

Each protocol is shaped around what its callers do, so a component can ask for just the part it uses,
and combine parts structurally, e.g. ``class TriggerStore(JobStore, InstanceStore, CalendarStore,
Protocol)``. ``Store`` (an ABC) is every part plus ``start``/``close``; ``sql.SqlStore`` implements it.
The parts live by kind of record: ``_access_store``, ``_job_store`` (and calendars), ``_instance_store``
(and their logs and alarms), ``_task_store``, ``_workflow_store``, ``_lease_store`` and ``_backfills``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from sx.scheduler.store._access_store import AccessStore
from sx.scheduler.store._backfills import BackfillStore
from sx.scheduler.store._instance_store import AlarmStore, InstanceLogStore, InstanceStore
from sx.scheduler.store._job_store import CalendarStore, JobStore
from sx.scheduler.store._lease_store import LeaseStore
from sx.scheduler.store._task_store import ParallelTaskStore
from sx.scheduler.store._workflow_store import WorkflowStore

__all__ = ["Store"]


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
