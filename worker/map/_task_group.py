"""What a worker holds of one instance whose tasks a master started here: the tasks, their queue and
consumer slots, and the statuses not yet delivered to the master; and the seat a running map task
leaves while it waits in ``ctx.map``, with the worker-wide permits of hook threads to wait there."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sx.processors import JobContext, TaskStatus
from sx.protos.v1 import common_pb2
from sx.worker._convert import ContextFactory, TaskInfo
from sx.worker._hooks import HookRunner, Resolved

__all__ = [
    "MAP_BATCH",
    "WAITING_THREADS",
    "RunningTask",
    "Seat",
    "Slots",
    "StatusUpdate",
    "TaskGroup",
    "ThreadWaits",
]

MAP_BATCH = 1000
"""Payloads per map batch (numbered, so a task run again maps nothing twice) and per ``MapTasks`` call."""
WAITING_THREADS = 1
"""Hook threads of a worker that may wait in ``ctx.map`` for room at once (see ``ThreadWaits``)."""

StatusUpdate = tuple[int, int, str, str, int]
"""A task status not sent yet: (task id, status, result, task name, task attempt)."""


class Slots:
    """The consumer slots of one map instance on this worker: at most ``limit`` of its tasks run.

    A task giving its slot back while it waits (``Seat``) takes one again with ``take_back``, ahead of
    tasks not started yet: consumers stop taking new tasks while one waits to come back.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._back: deque[asyncio.Future[None]] = deque()

    @property
    def returning(self) -> bool:
        return bool(self._back)

    def try_take(self) -> bool:
        if self.used < self.limit and not self._back:
            self.used += 1
            return True
        return False

    def release(self) -> None:
        while self._back:
            waiter = self._back.popleft()
            if not waiter.done():
                waiter.set_result(None)  # handed over: ``used`` stays
                return
        self.used -= 1

    async def take_back(self) -> None:
        """Wait for a slot; cancelled, the caller holds none."""
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._back.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                with contextlib.suppress(ValueError):
                    self._back.remove(waiter)
            else:
                self.release()  # handed over just as the cancel came: pass it on
            raise


class ThreadWaits:
    """How many blocking (``def``) hooks of this worker may wait in ``ctx.map`` for room at once.

    Such a hook keeps its thread of the worker's pool while it waits, and the tasks that make the room
    need threads too: were every thread waiting, nothing would ever run again. So one thread of the
    pool may wait (it throttles a hook mapping in a loop) and the others never do: their map goes on
    in the background (``PeerMapper``). None may wait when the pool has a single thread.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def try_take(self) -> bool:
        if self.used < self.limit:
            self.used += 1
            return True
        return False

    def release(self) -> None:
        self.used -= 1


@dataclass(eq=False, slots=True)
class Seat:
    """A running map task's consumer slot and hook slot, given back while it waits in ``ctx.map``.

    ``threads`` is set when the hook runs in a thread of the pool, which it keeps while it waits: it
    may then leave its seat only with a permit from the worker's ``ThreadWaits``.
    """

    slots: Slots
    hooks: HookRunner
    on_free: Callable[[], None]
    """Called when the slot is free: a consumer may start on the tasks queued here."""
    threads: ThreadWaits | None = None
    held: bool = True
    _permit: ThreadWaits | None = None
    """The waits this thread took a permit of while it waits."""

    def leave(self) -> bool:
        """Give both slots back to wait in ``ctx.map``; False when this hook's thread may not wait."""
        if not self.held:
            return True
        if self.threads is not None:
            if not self.threads.try_take():
                return False
            self._permit = self.threads
        self.held = False
        self.hooks.lend()
        self.slots.release()
        self.on_free()
        return True

    async def sit(self) -> None:
        """Take both back: the consumer slot first, as a task starting does, so no two wait on each other."""
        if self.held:
            return
        try:
            await self.slots.take_back()  # cancelled: ``held`` stays False and the consumer owns no slot
            self.held = True
            await self.hooks.take_back()
        finally:
            permit, self._permit = self._permit, None
            if permit is not None:  # the thread no longer waits in ``ctx.map``
                permit.release()

    def vacate(self) -> None:
        """Give the consumer slot back once the hook returned (its hook slot is free already)."""
        if self.held:
            self.held = False
            self.slots.release()
            self.on_free()

    async def reclaim(self) -> None:
        """Take the consumer slot back after ``vacate`` (to run the task again)."""
        if not self.held:
            await self.slots.take_back()
            self.held = True


@dataclass(eq=False)
class RunningTask:
    info: TaskInfo
    ctx: JobContext
    runner: asyncio.Task[None] | None = None
    kill_reason: str | None = None
    silent: bool = False
    """Report nothing when it ends: a map task stopped by a shutdown is the master's to send elsewhere."""


@dataclass(eq=False)
class TaskGroup:
    """The tasks of one instance on this worker, and the statuses not yet delivered to its master."""

    spec: common_pb2.InstanceSpec
    master_address: str
    master_worker_id: str
    resolved: Resolved
    consumers: asyncio.Semaphore
    """Broadcast tasks run under it; map tasks under ``slots``."""
    slots: Slots
    is_map: bool = False
    tasks: dict[int, RunningTask] = field(default_factory=dict)
    pending: dict[int, StatusUpdate] = field(default_factory=dict)
    """Statuses not yet sent, by task id: a later status of a task replaces an unsent earlier one."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    flusher: asyncio.Task[None] | None = None
    destroyed: bool = False
    queue: deque[TaskInfo] = field(default_factory=deque)
    """Map tasks waiting for a consumer."""
    queued_ids: set[int] = field(default_factory=set)
    consumers_running: int = 0
    consumer_starting: bool = False
    """A consumer was created and has not taken a task yet."""
    consumer_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    contexts: ContextFactory | None = None
    map_chunk: int = MAP_BATCH
    """Payloads per MapTasks call: at most the master's queue size (more would only be sent again)."""
    watcher: asyncio.Task[None] | None = None
    """Checks that the master (on another worker) still runs the instance."""

    @property
    def idle(self) -> bool:
        return not self.tasks and not self.pending and not self.queue and self.consumers_running == 0

    def report(self, info: TaskInfo, status: TaskStatus, result: str) -> None:
        """Queue a status of one task for the master (a later one replaces an unsent earlier one)."""
        # A tuple now, a message only when sent: most RUNNING statuses are replaced before that.
        self.pending[info.task_id] = (info.task_id, int(status), result, info.task_name, info.task_attempt)
        self.wake.set()
