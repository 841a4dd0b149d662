"""Codes shared by the worker, the scheduler and the wire: the original OpenAPI's numbers and strings."""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = [
    "ACTIVE_INSTANCE_STATUSES",
    "REDUCE_TASK_NAME",
    "ROOT_TASK_NAME",
    "ExecuteMode",
    "InstanceStatus",
    "JobType",
    "MisfirePolicy",
    "TaskStatus",
    "TimeType",
    "TriggerType",
]


class ExecuteMode(StrEnum):
    """How an instance runs across the group's workers (the OpenAPI's ``executeMode``)."""

    STANDALONE = "standalone"
    BROADCAST = "broadcast"
    PARALLEL = "parallel"
    GRID = "grid"
    BATCH = "batch"

    @classmethod
    def parse(cls, value: str) -> ExecuteMode:
        """Read a wire value; the original document spells broadcast ``broadcatst``, so both are read."""
        text = value.strip().lower()
        if text == "broadcatst":
            return cls.BROADCAST
        return cls(text)

    @property
    def is_map(self) -> bool:
        return self in (ExecuteMode.PARALLEL, ExecuteMode.GRID, ExecuteMode.BATCH)


class JobType(StrEnum):
    JAVA = "java"
    PYTHON = "python"
    SHELL = "shell"
    GO = "go"


class TimeType(IntEnum):
    CRON = 1
    FIXED_RATE = 3
    SECOND_DELAY = 4
    API = 100


class InstanceStatus(IntEnum):
    """Instance status codes of the original; the OpenAPI shows 1, 3, 4, 5 and 9."""

    WAITING = 1
    READY = 2
    RUNNING = 3
    SUCCESS = 4
    FAILED = 5
    REJECTED = 9

    @property
    def finished(self) -> bool:
        return self in (InstanceStatus.SUCCESS, InstanceStatus.FAILED, InstanceStatus.REJECTED)


ACTIVE_INSTANCE_STATUSES: tuple[InstanceStatus, ...] = (
    InstanceStatus.WAITING,
    InstanceStatus.READY,
    InstanceStatus.RUNNING,
)
"""The statuses of an instance that has not finished yet (counted against maxConcurrency)."""


class TaskStatus(IntEnum):
    """Subtask status codes; RUNNING, SUCCESS and FAILED share their numbers with InstanceStatus."""

    INIT = 1
    PULLED = 2
    RUNNING = 3
    SUCCESS = 4
    FAILED = 5

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILED)


class TriggerType(IntEnum):
    SCHEDULED = 1
    DATA_RERUN = 2
    API = 3
    MANUAL_RERUN = 4
    SYSTEM_RETRY = 5


class MisfirePolicy(StrEnum):
    """What a cron or fix_rate job does about fires missed while the scheduler was down."""

    RUN_ONCE = "run_once"
    SKIP = "skip"


ROOT_TASK_NAME = "MAP_TASK_ROOT"
REDUCE_TASK_NAME = "REDUCE_TASK"
