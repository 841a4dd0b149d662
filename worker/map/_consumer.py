"""The map tasks a master started on this worker: consumers run them, their ``ctx.map`` goes to the master.

Map tasks (parallel, grid, batch) wait in a per-instance queue drained by ``consumerSize`` consumers,
retry locally (``taskMaxAttempt``; never the root) and send their ``ctx.map`` batches to the master
through ``PeerMapper``. A map task waiting for room in the master's full queue gives its consumer slot
and its hook slot back meanwhile (``Seat``): the tasks that drain the queue must be able to run. A sync
hook waiting in ``ctx.map`` still holds its thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable

from sx.processors import CancelledError, JobContext, ProcessResult, SxError, TaskStatus
from sx.processors.engine import describe_exception
from sx.protos.v1 import peer_pb2
from sx.worker._convert import ContextFactory, TaskInfo
from sx.worker._hooks import HookRunner
from sx.worker._peer import PeerClients
from sx.worker.map._task_group import MAP_BATCH, RunningTask, Seat, TaskGroup

__all__ = ["MapConsumers", "MapRefusedError", "PeerMapper"]


class MapRefusedError(SxError):
    """The instance's master refused a ``ctx.map`` batch (the instance ended, or a mode cap was hit)."""


class PeerMapper:
    """Sends one task run's ``ctx.map`` batches to its instance's master (``MapTasks``).

    Batches are numbered from 0 for each run, so the master takes each batch of a task once even when
    the task runs again. The master takes what fits in its queue and says how much (``taken``); the
    rest is sent again, and meanwhile the task gives its slots back (``seat``) and the calls may wait
    at the master for room (``wait``).
    """

    def __init__(
        self, *, peers: PeerClients, group: TaskGroup, worker_id: str, seat: Seat | None = None
    ) -> None:
        self._peers = peers
        self._group = group
        self._worker_id = worker_id
        self._seat = seat
        self._seq = 0

    async def map(self, ctx: JobContext, payloads: list[bytes], task_name: str) -> None:
        try:
            for start in range(0, len(payloads), MAP_BATCH):
                seq = self._seq
                self._seq += 1
                await self._send(ctx, task_name, seq, payloads[start : start + MAP_BATCH])
        finally:
            if self._seat is not None:
                await self._seat.sit()

    async def _send(self, ctx: JobContext, task_name: str, seq: int, batch: list[bytes]) -> None:
        offset = 0
        errors = 0
        seat = self._seat
        while offset < len(batch):
            if ctx.is_cancelled:
                raise CancelledError(f"instance {ctx.instance_id} task {ctx.task_id} was stopped")
            request = peer_pb2.MapTasksRequest(
                instance_id=ctx.instance_id,
                parent_task_id=ctx.task_id,
                task_name=task_name,
                payloads=batch[offset : offset + self._group.map_chunk],
                worker_id=self._worker_id,
                batch_seq=seq,
                offset=offset,
                wait=seat is None or not seat.held,
            )
            address = self._group.master_address
            try:
                reply = await self._peers.client(address).MapTasks(request)
            except Exception as exc:
                errors += 1
                if errors > 3:
                    why = f"ctx.map({task_name!r}): master {address} unreachable: {exc}"
                    raise MapRefusedError(why) from exc
                await asyncio.sleep(0.05 * errors)
                continue
            if not reply.accepted:
                raise MapRefusedError(f"ctx.map({task_name!r}): the master refused: {reply.message}")
            offset += reply.taken
            if reply.taken < len(request.payloads):
                # The master's queue is full: wait without holding what the tasks draining it need.
                if seat is not None and seat.held:
                    seat.leave()
                elif reply.taken == 0:
                    await asyncio.sleep(0.01)  # the master held the call already; this only avoids a spin


class MapConsumers:
    """Run the queued map tasks of each instance under its consumer limit (``TaskGroup.slots``).

    Statuses go to the group (``TaskGroup.report``); the runner of the group sends them to the master.
    """

    def __init__(
        self, *, hooks: HookRunner, peers: PeerClients, worker_id: str, address: Callable[[], str]
    ) -> None:
        self._hooks = hooks
        self._peers = peers
        self._worker_id = worker_id
        self._address = address

    def add(self, group: TaskGroup) -> None:
        """Start one more consumer when tasks wait and the instance's consumer limit allows it.

        Consumers are added one at a time: each one, as it takes a task, adds the next while tasks
        remain. Tasks that wait on I/O so get up to ``consumerSize`` consumers within a few loop turns,
        and tasks that never wait are all run by one consumer, without a Task object per subtask.
        """
        if group.consumer_starting or not group.queue or not group.slots.try_take():
            return
        group.consumers_running += 1
        group.consumer_starting = True
        consumer = asyncio.create_task(self._consume(group))
        group.consumer_tasks.add(consumer)
        consumer.add_done_callback(group.consumer_tasks.discard)

    async def _consume(self, group: TaskGroup) -> None:
        """Run queued tasks of the instance in the slot this consumer was started with."""
        group.consumer_starting = False
        owns = True
        try:
            queue = group.queue
            slots = group.slots
            me = asyncio.current_task()
            on_free = functools.partial(self.add, group)
            while queue and not slots.returning:
                info = queue.popleft()
                group.queued_ids.discard(info.task_id)
                self.add(group)
                seat = Seat(slots, self._hooks, on_free)
                await self._run(group, info, me, seat)
                if not seat.held:
                    owns = False  # stopped while waiting for its slot back: this consumer has none
                    break
        finally:
            group.consumers_running -= 1
            if owns:
                group.slots.release()
            self.add(group)
            group.wake.set()

    def _context(self, group: TaskGroup, info: TaskInfo, seat: Seat | None = None) -> JobContext:
        contexts = group.contexts
        if contexts is None:
            contexts = group.contexts = ContextFactory(
                group.spec,
                worker_addr=self._address(),
                codec=group.resolved.codec,
                loop=asyncio.get_running_loop(),
            )
        return contexts.make(
            info, mapper=PeerMapper(peers=self._peers, group=group, worker_id=self._worker_id, seat=seat)
        )

    async def _run(
        self, group: TaskGroup, info: TaskInfo, runner: asyncio.Task[None] | None, seat: Seat
    ) -> None:
        try:
            ctx = self._context(group, info, seat)
        except Exception as exc:
            group.report(info, TaskStatus.FAILED, f"bad task: {describe_exception(exc)}")
            return
        task = RunningTask(info=info, ctx=ctx, runner=runner)
        group.tasks[info.task_id] = task
        group.report(info, TaskStatus.RUNNING, "")
        options = group.spec.map_options
        retries = 0 if info.task_id == 0 else max(options.task_max_attempt, 0)
        outcome: ProcessResult
        try:
            while True:
                outcome = await self._hooks.call(group.resolved, "process", task.ctx)
                if outcome.ok or task.kill_reason is not None or info.task_attempt >= retries:
                    break
                if options.task_attempt_interval_s > 0:
                    await asyncio.sleep(options.task_attempt_interval_s)
                if task.kill_reason is not None:
                    break
                info = dataclasses.replace(info, task_attempt=info.task_attempt + 1)
                task.info = info
                task.ctx = self._context(group, info, seat)
        except asyncio.CancelledError:
            outcome = ProcessResult.failure("killed")
        group.tasks.pop(info.task_id, None)
        if task.silent:
            group.pending.pop(info.task_id, None)
            return
        ok = outcome.ok and task.kill_reason is None
        result = task.kill_reason if task.kill_reason is not None else outcome.result
        group.report(info, TaskStatus.SUCCESS if ok else TaskStatus.FAILED, result)
