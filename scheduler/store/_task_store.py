"""`ParallelTaskStore`: the subtasks of parallel-mode instances, which the scheduler keeps for their
masters."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Protocol

from sx.processors import TaskStatus
from sx.scheduler.store._records import NewTask, Page, Task, TaskStatusChange

__all__ = ["ParallelTaskStore"]


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
