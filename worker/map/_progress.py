"""Counters of a map instance (per task name and per worker) and the progress JSON built from them.

The JSON is the one the scheduler stores and shows::

    {"taskProgress": [{"name", "total", "pulled", "running", "success", "failed"}],
     "workerProgress": [{"workerAddr", "workerId", "total", "pulled", "running", "success", "failed"}],
     "dispatch": {"batches", "maxBatch", "tasks"}}

``dispatch`` is ours: how many StartTasks pages the master sent, the largest page and the tasks in them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sx.processors import REDUCE_TASK_NAME

__all__ = ["Counter", "MapProgress"]


@dataclass(slots=True)
class Counter:
    """One row of the progress: tasks mapped, dispatched, running and finished."""

    total: int = 0
    pulled: int = 0
    running: int = 0
    success: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "total": self.total,
            "pulled": self.pulled,
            "running": self.running,
            "success": self.success,
            "failed": self.failed,
        }


@dataclass(slots=True)
class _WorkerCounter:
    worker_id: str
    counter: Counter = field(default_factory=Counter)


class MapProgress:
    """The counters of one map instance; the master moves them as tasks are mapped, sent and finished.

    A task is *queued* (mapped, not sent), *pulled* (sent to a worker), *running* (the worker said it
    started) or finished. The task-name counter counts every task once in ``total``; a worker's
    ``total`` counts the tasks sent to it (a task re-sent after a failover counts on both workers).
    """

    def __init__(self) -> None:
        self.tasks: dict[str, Counter] = {}
        self.workers: dict[str, _WorkerCounter] = {}
        self.batches = 0
        self.max_batch = 0
        self.dispatched = 0

    def _task(self, name: str) -> Counter:
        counter = self.tasks.get(name)
        if counter is None:
            counter = self.tasks[name] = Counter()
        return counter

    def _worker(self, address: str, worker_id: str = "") -> Counter:
        entry = self.workers.get(address)
        if entry is None:
            entry = self.workers[address] = _WorkerCounter(worker_id=worker_id)
        return entry.counter

    # -- moves ---------------------------------------------------------------------------------------

    def mapped(self, name: str, count: int) -> None:
        self._task(name).total += count

    def restore(self, name: str, *, total: int, success: int, failed: int) -> None:
        """Counters of a resumed instance, read back from its task file."""
        counter = self._task(name)
        counter.total += total
        counter.success += success
        counter.failed += failed

    def sent(self, name: str, address: str, worker_id: str, count: int = 1) -> None:
        self._task(name).pulled += count
        worker = self._worker(address, worker_id)
        worker.total += count
        worker.pulled += count

    def page(self, size: int) -> None:
        self.batches += 1
        self.dispatched += size
        self.max_batch = max(self.max_batch, size)

    def started(self, name: str, address: str) -> None:
        task = self._task(name)
        task.pulled -= 1
        task.running += 1
        worker = self._worker(address)
        worker.pulled -= 1
        worker.running += 1

    def finished(self, name: str, address: str, *, ok: bool, was_running: bool, count: int = 1) -> None:
        task = self._task(name)
        worker = self._worker(address)
        if was_running:
            task.running -= count
            worker.running -= count
        else:
            task.pulled -= count
            worker.pulled -= count
        if ok:
            task.success += count
            worker.success += count
        else:
            task.failed += count
            worker.failed += count

    def reopened(self, name: str, *, was_success: bool) -> None:
        """A finished task was reset to run again (``retryTasks``): it leaves the finished counters."""
        counter = self._task(name)
        if was_success:
            counter.success -= 1
        else:
            counter.failed -= 1

    def reduce_started(self) -> None:
        """Reduce runs on the master: it counts as one more task (``REDUCE_TASK``), running."""
        counter = self._task(REDUCE_TASK_NAME)
        counter.total += 1
        counter.running += 1

    def reduce_finished(self, *, ok: bool) -> None:
        counter = self._task(REDUCE_TASK_NAME)
        counter.running -= 1
        if ok:
            counter.success += 1
        else:
            counter.failed += 1

    def taken_back(self, name: str, address: str, *, was_running: bool) -> None:
        """A task of a lost worker goes back to the queue: it leaves that worker's counters."""
        task = self._task(name)
        worker = self._worker(address)
        if was_running:
            task.running -= 1
            worker.running -= 1
        else:
            task.pulled -= 1
            worker.pulled -= 1
        worker.total -= 1

    # -- reading -------------------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return sum(c.total for c in self.tasks.values())

    @property
    def success(self) -> int:
        return sum(c.success for c in self.tasks.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.tasks.values())

    def to_json(self) -> str:
        """The progress JSON (compact)."""
        body = {
            "taskProgress": [{"name": name, **c.as_dict()} for name, c in self.tasks.items()],
            "workerProgress": [
                {"workerAddr": address, "workerId": w.worker_id, **w.counter.as_dict()}
                for address, w in self.workers.items()
            ],
            "dispatch": {"batches": self.batches, "maxBatch": self.max_batch, "tasks": self.dispatched},
        }
        return json.dumps(body, separators=(",", ":"))
