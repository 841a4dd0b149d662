"""Where a map master keeps its subtasks: the ``TaskStore`` seam and the record it hands out.

Three implementations: ``MemoryTaskStore`` (grid, and parallel with no scheduler channel),
``FileTaskStore`` (batch, a SQLite file) and ``ServerTaskStore`` (parallel, written through to the
scheduler).

The master holds only the tasks in flight (sent to a worker, not finished) itself; the store holds the
queue of tasks waiting to be sent and what finished. Every store remembers how much of each map batch
(parent task id, batch number) it took: a full queue takes a batch in part and the mapper sends the
rest later, and a task that runs again after a failover or a resume and maps the same batches again
does not create its subtasks twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

from sx.processors import TaskStatus

__all__ = ["ROOT_TASK_ID", "TaskRecord", "TaskStore"]

ROOT_TASK_ID = 0
"""The root task's id (``MAP_TASK_ROOT``); subtasks are numbered from 1."""


@dataclass(slots=True)
class TaskRecord:
    """One subtask as the master sends it."""

    task_id: int
    name: str
    payload: bytes


class TaskStore(ABC):
    """The queue and the finished tasks of one map instance.

    ``keep_results`` keeps every task's result and status for reduce; map-only jobs keep none.
    """

    def __init__(self, *, keep_results: bool) -> None:
        self.keep_results = keep_results
        self.pending = 0
        """Tasks waiting to be sent."""
        self.resumed = False
        """True when the store was reopened with the tasks of an earlier master."""

    @abstractmethod
    def add_root(self) -> None:
        """Queue the root task (id 0) unless it exists already (a resumed instance)."""

    @abstractmethod
    def taken(self, parent_id: int, seq: int) -> int:
        """How many payloads of the map batch (parent task id, batch number) the store holds."""

    @abstractmethod
    def add(self, name: str, payloads: list[bytes], *, parent_id: int, seq: int) -> None:
        """Queue the next payloads of a map batch (those from index ``taken(parent_id, seq)`` on)."""

    @abstractmethod
    def take(self, limit: int) -> list[TaskRecord]:
        """Up to ``limit`` queued tasks, oldest first, which leave the queue."""

    @abstractmethod
    def requeue(self, records: Iterable[TaskRecord]) -> None:
        """Tasks taken but not finished (their worker was lost) go back to the queue."""

    @abstractmethod
    def finish(self, done: list[tuple[int, TaskStatus, str]]) -> None:
        """Record finished tasks: (task id, SUCCESS or FAILED, result)."""

    @abstractmethod
    def results(self) -> tuple[dict[int, str], dict[int, TaskStatus]]:
        """Every finished task's result and status, for reduce (empty unless ``keep_results``)."""

    def restored_counts(self) -> dict[str, tuple[int, int, int]]:
        """Per task name (total, success, failed) of a resumed instance; empty for a new one."""
        return {}

    @abstractmethod
    def close(self, *, remove: bool) -> None:
        """Release the store; ``remove`` deletes what it kept (the instance is over)."""
