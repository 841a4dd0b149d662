"""The store's faces and interfaces: what ``sx.scheduler.store`` and its ``sql`` package offer, and
``Store`` being exactly its small protocols plus ``start``/``close``."""

from __future__ import annotations

import inspect
from typing import Protocol

import sx.scheduler.store as store_face
import sx.scheduler.store.sql as sql_face
from sx.scheduler.store import (
    AccessStore,
    AlarmStore,
    BackfillStore,
    CalendarStore,
    InstanceLogStore,
    InstanceStore,
    JobStore,
    LeaseStore,
    ParallelTaskStore,
    Store,
    WorkflowStore,
)
from sx.scheduler.store.sql import SqlStore

PARTS: list[type] = [
    AccessStore,
    JobStore,
    InstanceStore,
    CalendarStore,
    AlarmStore,
    WorkflowStore,
    ParallelTaskStore,
    InstanceLogStore,
    LeaseStore,
    BackfillStore,
]


def _methods(cls: type) -> set[str]:
    return {
        name for name, _ in inspect.getmembers(cls, inspect.iscoroutinefunction) if not name.startswith("_")
    }


def test_the_faces() -> None:
    records = [
        "AccessKey",
        "Alarm",
        "Backfill",
        "BackfillFire",
        "BackfillProgress",
        "BackfillState",
        "Calendar",
        "Fence",
        "Fire",
        "FireState",
        "Group",
        "GroupLease",
        "Instance",
        "InstanceChange",
        "Job",
        "LogLine",
        "Namespace",
        "NewBackfill",
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
    errors = ["DuplicateError", "FencedError", "InUseError", "NotFoundError", "StoreError"]
    interfaces = [part.__name__ for part in PARTS] + ["Store"]
    assert sorted(store_face.__all__) == sorted(records + errors + interfaces)
    assert sorted(sql_face.__all__) == ["SqlStore", "normalize_url", "sqlite_url"]


def test_store_is_its_parts_plus_start_close_and_ping() -> None:
    for part in PARTS:
        assert Protocol in part.__bases__, part
        assert part in Store.__mro__ and part in SqlStore.__mro__
    by_part = [_methods(part) for part in PARTS]
    # Every method belongs to one part.
    assert sum(len(methods) for methods in by_part) == len(set().union(*by_part))
    assert _methods(Store) == set().union(*by_part) | {"start", "close", "ping"}
    # The defaults a part offers (one look-up answered by two, many updates by one each) stay
    # concrete; everything else is abstract.
    assert Store.__abstractmethods__ == (_methods(Store) - {"get_namespace_and_group", "update_instances"})
    assert not SqlStore.__abstractmethods__


def test_parts_combine_structurally() -> None:
    # What a consumer declares when it needs only some parts; SqlStore satisfies it (checked by mypy).
    class TriggerStore(JobStore, InstanceStore, CalendarStore, Protocol): ...

    def wants(store: TriggerStore) -> TriggerStore:
        return store

    assert wants(SqlStore("sqlite+aiosqlite://")) is not None
