"""What a worker holds of one instance whose tasks a master started here: the tasks, their queue and
consumer slots, and the statuses not yet delivered to the master."""

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

__all__ = ["MAP_BATCH", "RunningTask", "Seat", "Slots", "StatusUpdate", "TaskGroup"]

MAP_BATCH = 1000
"""Payloads per map batch (numbered, so a task run again maps nothing twice) and per ``MapTasks`` call."""

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


@dataclass(eq=False, slots=True)
class Seat:
    """A running map task's consumer slot and hook slot, given back while it waits in ``ctx.map``."""

    slots: Slots
    hooks: HookRunner
    on_free: Callable[[], None]
    """Called when the slot is free: a consumer may start on the tasks queued here."""
    held: bool = True

    def leave(self) -> None:
        if self.held:
            self.held = False
            self.hooks.lend()
            self.slots.release()
            self.on_free()

    async def sit(self) -> None:
        """Take both back: the consumer slot first, as a task starting does, so no two wait on each other."""
        if self.held:
            return
        await self.slots.take_back()  # cancelled: ``held`` stays False and the consumer owns no slot
        self.held = True
        await self.hooks.take_back()


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
