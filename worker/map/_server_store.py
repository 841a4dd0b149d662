"""The parallel mode's task store: the master's queue in memory, every subtask kept by the scheduler.

Parallel instances are small (``PARALLEL_TASK_CAP`` subtasks) and their subtasks are meant to be seen
and retried one by one through the OpenAPI (``/openapi/v1/instance/tasks`` and ``retryTasks``), so the
master writes them through to the scheduler's store:

- mapped tasks go in batches (``CreateTasks``, up to ``WRITE_BATCH`` tasks per call, never one call per
  task), and status changes are sent in batches grouped by status and worker (``UpdateTasks``). A
  background writer flushes what accumulated every ``flush_interval`` seconds; a write is tried
  ``WRITE_ATTEMPTS`` times, after which the instance fails (``on_fatal``, given to ``open``).
- ``open`` loads what the scheduler has for the instance before anything runs. A retry instance
  (maxAttempt, e.g. after its master died) is given its predecessor's tasks by the scheduler: the
  SUCCESS ones stay finished and are **not run again**; the others run again. An instance re-opened by
  ``retryTasks`` finds its own tasks: finished ones stay finished and the reset ones run again.
- ``completion`` flushes and asks the scheduler for the instance's state before the master finishes;
  tasks the OpenAPI reset to INIT meanwhile come back as retried (``poll_retries`` does the same while
  the instance runs), and the master runs them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import grpc

from sx.processors import ROOT_TASK_NAME, TaskStatus
from sx.protos import sign_task_request
from sx.protos.v1 import scheduler_pb2
from sx.worker.map._store import ROOT_TASK_ID, TaskRecord, TaskStore

__all__ = ["WRITE_ATTEMPTS", "WRITE_BATCH", "ServerTaskStore", "TaskStoreStub"]

log = logging.getLogger("sx.worker")

WRITE_BATCH = 1000
"""Tasks per CreateTasks call and task ids per UpdateTasks call."""
WRITE_ATTEMPTS = 3
"""Tries of one write before the instance fails."""
_RETRY_PAUSES = (0.2, 0.5)
_RPC_TIMEOUT = 30.0


class TaskStoreStub(Protocol):
    """The scheduler's task-store RPCs (a ``SchedulerStub`` fits)."""

    def LoadTasks(self, request: scheduler_pb2.LoadTasksRequest, **kwargs: Any) -> Any: ...
    def CreateTasks(self, request: scheduler_pb2.CreateTasksRequest, **kwargs: Any) -> Any: ...
    def UpdateTasks(self, request: scheduler_pb2.UpdateTasksRequest, **kwargs: Any) -> Any: ...
    def QueryTasks(self, request: scheduler_pb2.QueryTasksRequest, **kwargs: Any) -> Any: ...


class ServerTaskStore(TaskStore):
    """A parallel instance's tasks: queued in memory, persisted by the scheduler (see the module doc).

    ``caller`` identifies this worker to the scheduler, which only lets the instance's master write;
    every call carries a proof of the group's ``app_key`` for it.
    """

    def __init__(
        self,
        *,
        stub: TaskStoreStub,
        caller: scheduler_pb2.TaskCaller,
        app_key: str,
        instance_id: int,
        keep_results: bool,
        flush_interval: float = 0.2,
    ) -> None:
        super().__init__(keep_results=keep_results)
        self._stub = stub
        self._caller = caller
        self._app_key = app_key
        self.instance_id = instance_id
        self.flush_interval = flush_interval
        self._on_fatal: Callable[[str], None] = lambda _why: None
        self.fatal: str | None = None
        self._records: dict[int, TaskRecord] = {}
        self._parents: dict[int, tuple[int, int]] = {}
        self._queue: deque[TaskRecord] = deque()
        self._batches: dict[tuple[int, int], int] = {}
        self._next_id = ROOT_TASK_ID + 1
        self._finished: dict[int, TaskStatus] = {}
        self._results: dict[int, str] = {}
        self._restored: dict[str, tuple[int, int, int]] = {}
        # Finished statuses the scheduler has (flushed): only these can have been reset by the OpenAPI.
        self._stored_finished: set[int] = set()
        self._creates: list[scheduler_pb2.StoredTask] = []
        self._changes: list[tuple[TaskStatus, int, str, str, str]] = []
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.detached = False
        """True when the scheduler has no task store (an older one): nothing is written."""

    # -- loading and writing -------------------------------------------------------------------------

    async def open(self, *, on_fatal: Callable[[str], None]) -> None:
        """Load the instance's stored tasks and start the background writer.

        ``on_fatal(why)`` is called once when a write failed ``WRITE_ATTEMPTS`` times (the master fails
        the instance)."""
        self._on_fatal = on_fatal
        try:
            reply = await self._call(
                "LoadTasks", scheduler_pb2.LoadTasksRequest(instance_id=self.instance_id)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                raise
            # A scheduler without the task store: the tasks live in this master's memory only.
            log.warning("instance %s: the scheduler keeps no subtasks; they stay in memory", self.instance_id)
            self.detached = True
            self._creates.clear()
            self._changes.clear()
            return
        counts: dict[str, list[int]] = {}
        queued: list[TaskRecord] = []
        for task in sorted(reply.tasks, key=lambda t: t.task_id):
            record = TaskRecord(task.task_id, task.task_name, task.payload)
            self._records[record.task_id] = record
            if record.task_id != ROOT_TASK_ID:
                # A batch's tasks are taken from its start: the stored count is how far it was taken.
                key = (task.parent_id, task.batch_seq)
                self._batches[key] = self._batches.get(key, 0) + 1
            self._next_id = max(self._next_id, record.task_id + 1)
            entry = counts.setdefault(record.name, [0, 0, 0])
            entry[0] += 1
            status = TaskStatus(task.status) if task.status in (4, 5) else None
            if status is None:
                queued.append(record)
                continue
            self._finished[record.task_id] = status
            self._stored_finished.add(record.task_id)
            if self.keep_results:
                self._results[record.task_id] = task.result
            entry[1 if status is TaskStatus.SUCCESS else 2] += 1
        self._queue.extend(queued)
        self.pending = len(queued)
        self._restored = {name: (c[0], c[1], c[2]) for name, c in counts.items()}
        self.resumed = bool(self._records)
        if self.resumed:
            log.info(
                "instance %s: %d stored task(s) loaded, %d to run",
                self.instance_id,
                len(self._records),
                len(queued),
            )
        self._writer = asyncio.create_task(self._write_loop(), name=f"sx-task-writer-{self.instance_id}")

    async def flush(self) -> None:
        """Send what accumulated; after ``WRITE_ATTEMPTS`` failures ``on_fatal`` is called (see ``open``)."""
        async with self._lock:
            creates, self._creates = self._creates, []
            changes, self._changes = self._changes, []
            if not creates and not changes:
                return
            try:
                for start in range(0, len(creates), WRITE_BATCH):
                    request = scheduler_pb2.CreateTasksRequest(
                        instance_id=self.instance_id, tasks=creates[start : start + WRITE_BATCH]
                    )
                    await self._write("CreateTasks", request)
                for update in self._update_requests(changes):
                    await self._write("UpdateTasks", update)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why = f"the scheduler did not store the instance's tasks: {exc}"
                if self.fatal is None:
                    self.fatal = why
                    self._on_fatal(why)
                return
            self._stored_finished.update(task_id for status, task_id, *_ in changes if status.finished)

    def _update_requests(
        self, changes: list[tuple[TaskStatus, int, str, str, str]]
    ) -> Iterable[scheduler_pb2.UpdateTasksRequest]:
        # Grouped by (status, worker) and applied in status order (INIT, PULLED, RUNNING, finished), so a
        # task that moved several times between two flushes ends in its latest state.
        groups: dict[tuple[int, str, str], scheduler_pb2.TaskStatusGroup] = {}
        for status, task_id, worker_id, address, result in changes:
            key = (int(status), worker_id, address)
            group = groups.get(key)
            if group is None:
                group = groups[key] = scheduler_pb2.TaskStatusGroup(
                    status=int(status), worker_id=worker_id, worker_addr=address
                )
            group.task_ids.append(task_id)
            if status.finished:
                group.results.append(result)
        ordered = [groups[k] for k in sorted(groups)]
        request = scheduler_pb2.UpdateTasksRequest(instance_id=self.instance_id)
        size = 0
        for group in ordered:
            if size and size + len(group.task_ids) > WRITE_BATCH:
                yield request
                request = scheduler_pb2.UpdateTasksRequest(instance_id=self.instance_id)
                size = 0
            request.groups.append(group)
            size += len(group.task_ids)
        if size:
            yield request

    async def _write(self, method: str, request: Any) -> None:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await self._call(method, request)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt + 1 >= WRITE_ATTEMPTS:
                    raise
                log.warning("instance %s: %s failed (%s); trying again", self.instance_id, method, exc)
                await asyncio.sleep(_RETRY_PAUSES[min(attempt, len(_RETRY_PAUSES) - 1)])

    async def _call(self, method: str, request: Any) -> Any:
        request.caller.CopyFrom(self._caller)
        # A fresh proof per call (a retry too): each is bound to its request and accepted once.
        sign_task_request(self._app_key, method, request)
        return await getattr(self._stub, method)(request, timeout=_RPC_TIMEOUT)

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.flush_interval)  # let a burst of changes collect into one write
            self._dirty.clear()
            await self.flush()

    def _add_create(self, task: scheduler_pb2.StoredTask) -> None:
        if not self.detached:
            self._creates.append(task)
            self._dirty.set()

    def _change(
        self, status: TaskStatus, task_id: int, worker_id: str = "", address: str = "", result: str = ""
    ) -> None:
        if not self.detached:
            self._changes.append((status, task_id, worker_id, address, result))
            self._dirty.set()

    # -- the completion state ------------------------------------------------------------------------

    async def poll_retries(self) -> list[tuple[TaskRecord, TaskStatus]]:
        """Tasks the OpenAPI reset to INIT since they finished: queued again, with their old status."""
        if self.detached:
            return []
        await self.flush()
        async with self._lock:
            reply = await self._call(
                "QueryTasks", scheduler_pb2.QueryTasksRequest(instance_id=self.instance_id)
            )
            return self._requeue_reset(reply.init_task_ids)

    async def completion(self) -> tuple[dict[TaskStatus, int], list[tuple[TaskRecord, TaskStatus]]]:
        """Flush, then the scheduler's task counts per status and the tasks queued again (as above).

        Detached (no task store), the counts are this master's own."""
        if self.detached:
            counts: dict[TaskStatus, int] = {}
            for status in self._finished.values():
                counts[status] = counts.get(status, 0) + 1
            unfinished = len(self._records) - len(self._finished)
            if unfinished:
                counts[TaskStatus.INIT] = unfinished
            return counts, []
        await self.flush()
        async with self._lock:
            reply = await self._call(
                "QueryTasks", scheduler_pb2.QueryTasksRequest(instance_id=self.instance_id)
            )
            counts = {TaskStatus(int(s)): int(n) for s, n in reply.counts.items()}
            return counts, self._requeue_reset(reply.init_task_ids)

    def _requeue_reset(self, task_ids: Iterable[int]) -> list[tuple[TaskRecord, TaskStatus]]:
        again: list[tuple[TaskRecord, TaskStatus]] = []
        for task_id in task_ids:
            if task_id not in self._stored_finished:
                continue  # queued or running here: the scheduler's INIT is not news
            status = self._finished.pop(task_id, None)
            self._stored_finished.discard(task_id)
            record = self._records.get(task_id)
            if status is None or record is None:
                continue
            self._results.pop(task_id, None)
            self._queue.append(record)
            self.pending += 1
            again.append((record, status))
        if again:
            log.info("instance %s: %d task(s) reset to run again", self.instance_id, len(again))
        return again

    # -- the TaskStore interface ---------------------------------------------------------------------

    def add_root(self) -> None:
        if ROOT_TASK_ID in self._records:
            return
        record = TaskRecord(ROOT_TASK_ID, ROOT_TASK_NAME, b"")
        self._records[ROOT_TASK_ID] = record
        self._queue.appendleft(record)
        self.pending += 1
        self._add_create(scheduler_pb2.StoredTask(task_id=ROOT_TASK_ID, task_name=ROOT_TASK_NAME))

    def taken(self, parent_id: int, seq: int) -> int:
        return self._batches.get((parent_id, seq), 0)

    def add(self, name: str, payloads: list[bytes], *, parent_id: int, seq: int) -> None:
        key = (parent_id, seq)
        self._batches[key] = self._batches.get(key, 0) + len(payloads)
        first = self._next_id
        self._next_id += len(payloads)
        for i, payload in enumerate(payloads):
            record = TaskRecord(first + i, name, payload)
            self._records[record.task_id] = record
            self._queue.append(record)
            self._add_create(
                scheduler_pb2.StoredTask(
                    task_id=record.task_id,
                    task_name=name,
                    payload=payload,
                    parent_id=parent_id,
                    batch_seq=seq,
                )
            )
        self.pending += len(payloads)

    def take(self, limit: int) -> list[TaskRecord]:
        count = min(limit, len(self._queue))
        taken = [self._queue.popleft() for _ in range(count)]
        self.pending -= count
        return taken

    def assigned(self, records: Iterable[TaskRecord], *, worker_id: str, address: str) -> None:
        """Tasks sent to a worker (PULLED there; the scheduler counts an attempt)."""
        for record in records:
            self._change(TaskStatus.PULLED, record.task_id, worker_id, address)

    def started(self, task_id: int, *, address: str) -> None:
        """A worker said it started the task."""
        self._change(TaskStatus.RUNNING, task_id, "", address)

    def requeue(self, records: Iterable[TaskRecord]) -> None:
        items = list(records)
        self._queue.extendleft(reversed(items))
        self.pending += len(items)
        for record in items:
            self._change(TaskStatus.INIT, record.task_id)

    def finish(self, done: list[tuple[int, TaskStatus, str]]) -> None:
        for task_id, status, result in done:
            self._finished[task_id] = status
            if self.keep_results:
                self._results[task_id] = result
            self._change(status, task_id, result=result)

    def results(self) -> tuple[dict[int, str], dict[int, TaskStatus]]:
        if not self.keep_results:
            return {}, {}
        return self._results, self._finished

    def restored_counts(self) -> dict[str, tuple[int, int, int]]:
        return dict(self._restored)

    def close(self, *, remove: bool) -> None:
        # The tasks stay with the scheduler (they are the instance's history); only memory goes.
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        self._queue.clear()
        self._batches.clear()
        self.pending = 0

    async def aclose(self) -> None:
        """Flush what is left and stop the writer."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if self.fatal is None:
            await self.flush()
