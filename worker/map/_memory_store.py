"""The grid store: a map instance's queue and, for reduce, its results, all in the master's memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from sx.processors import ROOT_TASK_NAME, TaskStatus
from sx.worker.map._store import ROOT_TASK_ID, TaskRecord, TaskStore

__all__ = ["MemoryTaskStore"]


class MemoryTaskStore(TaskStore):
    """The grid store: a queue of records and, for reduce, the results, all in the master's memory."""

    def __init__(self, *, keep_results: bool) -> None:
        super().__init__(keep_results=keep_results)
        self._queue: deque[TaskRecord] = deque()
        self._next_id = 1
        self._batches: dict[tuple[int, int], int] = {}
        self._results: dict[int, str] = {}
        self._statuses: dict[int, TaskStatus] = {}
        self._root_added = False

    def add_root(self) -> None:
        if not self._root_added:
            self._root_added = True
            self._queue.appendleft(TaskRecord(ROOT_TASK_ID, ROOT_TASK_NAME, b""))
            self.pending += 1

    def taken(self, parent_id: int, seq: int) -> int:
        return self._batches.get((parent_id, seq), 0)

    def add(self, name: str, payloads: list[bytes], *, parent_id: int, seq: int) -> None:
        key = (parent_id, seq)
        self._batches[key] = self._batches.get(key, 0) + len(payloads)
        first = self._next_id
        self._next_id += len(payloads)
        self._queue.extend(TaskRecord(first + i, name, p) for i, p in enumerate(payloads))
        self.pending += len(payloads)

    def take(self, limit: int) -> list[TaskRecord]:
        queue = self._queue
        count = min(limit, len(queue))
        taken = [queue.popleft() for _ in range(count)]
        self.pending -= count
        return taken

    def requeue(self, records: Iterable[TaskRecord]) -> None:
        items = list(records)
        self._queue.extendleft(reversed(items))
        self.pending += len(items)

    def finish(self, done: list[tuple[int, TaskStatus, str]]) -> None:
        if not self.keep_results:
            return
        for task_id, status, result in done:
            self._results[task_id] = result
            self._statuses[task_id] = status

    def results(self) -> tuple[dict[int, str], dict[int, TaskStatus]]:
        return self._results, self._statuses

    def close(self, *, remove: bool) -> None:
        self._queue.clear()
        self._batches.clear()
        self._results = {}
        self._statuses = {}
        self.pending = 0
