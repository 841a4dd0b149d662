"""The map tasks a master started on this worker: consumers run them, their ``ctx.map`` goes to the master.

Map tasks (parallel, grid, batch) wait in a per-instance queue drained by ``consumerSize`` consumers,
retry locally (``taskMaxAttempt``; never the root) and send their ``ctx.map`` batches to the master
through ``PeerMapper``. A map task waiting for room in the master's full queue gives its consumer slot
and its hook slot back meanwhile (``Seat``): the tasks that drain the queue must be able to run.

A blocking (``def``) hook keeps its thread while ``ctx.map`` waits, and threads are few: only
``ThreadWaits`` of them may wait at once. Past that, ``ctx.map`` leaves the rest of its batches to be
sent in the background and returns; the task still ends only once the master took them all, so no
thread and no slot is held for it meanwhile, and the memory it holds is what the hook had mapped.

Tasks that never wait (CPU work in an async hook) would otherwise run back to back and hold the event
loop: the consumers share ``LOOP_TURN`` per turn of the loop (``LoopTurns``), so a master keeps
dispatching to its other workers while its own worker runs tasks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import time
from collections.abc import Callable

from sx.processors import CancelledError, JobContext, ProcessResult, SxError, TaskStatus
from sx.processors.engine import describe_exception
from sx.protos.v1 import peer_pb2
from sx.worker._convert import ContextFactory, TaskInfo
from sx.worker._hooks import HookRunner
from sx.worker._peer import PeerClients
from sx.worker.map._task_group import MAP_BATCH, WAITING_THREADS, RunningTask, Seat, TaskGroup, ThreadWaits

__all__ = ["LOOP_TURN", "LoopTurns", "MapConsumers", "MapRefusedError", "PeerMapper"]

LOOP_TURN = 0.002
"""Seconds the consumers of a worker may run tasks in one turn of the event loop before they let the rest
of the worker (statuses, dispatch, peer calls) run."""


class MapRefusedError(SxError):
    """The instance's master refused a ``ctx.map`` batch (the instance ended, or a mode cap was hit)."""


class PeerMapper:
    """Sends one task run's ``ctx.map`` batches to its instance's master (``MapTasks``).

    Batches are numbered from 0 for each run, so the master takes each batch of a task once even when
    the task runs again. The master takes what fits in its queue and says how much (``taken``); the
    rest is sent again, and meanwhile the task gives its slots back (``seat``) and the calls may wait
    at the master for room (``wait``). When the seat may not be left (a thread that may not wait),
    the rest goes on in the background (``backlog``) and ``map`` returns; a later ``map`` of the run
    comes after it, and the consumer waits for it (``drain``) before the task ends.
    """

    def __init__(
        self, *, peers: PeerClients, group: TaskGroup, worker_id: str, seat: Seat | None = None
    ) -> None:
        self._peers = peers
        self._group = group
        self._worker_id = worker_id
        self._seat = seat
        self._seq = 0
        self._backlog: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> bool:
        """Batches of this run are still being sent in the background."""
        return self._backlog is not None

    async def map(self, ctx: JobContext, payloads: list[bytes], task_name: str) -> None:
        first = self._seq
        batches = [
            (first + index, payloads[start : start + MAP_BATCH])
            for index, start in enumerate(range(0, len(payloads), MAP_BATCH))
        ]
        self._seq += len(batches)
        seat = self._seat
        try:
            if self._backlog is not None:
                # Earlier batches still wait for room: these go after them, with this thread waiting
                # for them if it may (a hook mapping in a loop is throttled), else in the background.
                if seat is not None and not seat.leave():
                    self._behind(ctx, task_name, batches, 0)
                    return
                await self.drain()
            for index, (seq, batch) in enumerate(batches):
                sent = await self._send(ctx, task_name, seq, batch, 0)
                if sent < len(batch):
                    self._behind(ctx, task_name, batches[index:], sent)
                    return
        finally:
            if seat is not None:
                await seat.sit()

    async def drain(self) -> None:
        """Wait until the master took the batches sent in the background; raises what stopped them."""
        backlog = self._backlog
        if backlog is None:
            return
        try:
            await backlog
        finally:
            if self._backlog is backlog:
                self._backlog = None

    def stop(self) -> None:
        """The run is over: batches still in the background are not sent."""
        backlog, self._backlog = self._backlog, None
        if backlog is None:
            return
        if backlog.done():
            if not backlog.cancelled():
                backlog.exception()  # the run ended otherwise (killed): what stopped the batches is moot
        else:
            backlog.cancel()

    def _behind(
        self, ctx: JobContext, task_name: str, batches: list[tuple[int, list[bytes]]], offset: int
    ) -> None:
        """Send ``batches`` (the first from ``offset``) in the background, after those there already."""
        before = self._backlog
        self._backlog = asyncio.get_running_loop().create_task(
            self._send_all(before, ctx, task_name, batches, offset),
            name=f"sx-map-backlog-{ctx.instance_id}-{ctx.task_id}",
        )

    async def _send_all(
        self,
        before: asyncio.Task[None] | None,
        ctx: JobContext,
        task_name: str,
        batches: list[tuple[int, list[bytes]]],
        offset: int,
    ) -> None:
        if before is not None:
            await before
        for seq, batch in batches:
            await self._send(ctx, task_name, seq, batch, offset, background=True)
            offset = 0

    async def _send(
        self,
        ctx: JobContext,
        task_name: str,
        seq: int,
        batch: list[bytes],
        offset: int,
        *,
        background: bool = False,
    ) -> int:
        """Send ``batch`` from ``offset`` until the master took it all, and return where it stopped: short
        of the end only when the queue is full and the seat may not be left (the hook's thread may not
        wait). A background send always waits at the master; it holds nothing the seat stands for."""
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
                wait=background or seat is None or not seat.held,
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
                if not request.wait and seat is not None and not seat.leave():
                    return offset
                if request.wait and reply.taken == 0:
                    await asyncio.sleep(0.01)  # the master held the call already; this only avoids a spin
        return offset


class LoopTurns:
    """How long the consumers of this worker have run tasks in the current turn of the event loop.

    Once ``LOOP_TURN`` is spent, every consumer leaves the loop to the rest of the worker until the next
    turn: one consumer yielding is not enough when dozens are ready and each would run a task first.
    """

    def __init__(self) -> None:
        self._began = time.perf_counter()
        self._spent = False

    def spent(self) -> bool:
        if self._spent:
            return True
        if time.perf_counter() - self._began < LOOP_TURN:
            return False
        self._spent = True
        # Runs in the next turn, before the consumers that yield from now on.
        asyncio.get_running_loop().call_soon(self._next_turn)
        return True

    def _next_turn(self) -> None:
        self._spent = False
        self._began = time.perf_counter()


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
        # One hook thread kept free: the waiting ones only wait for tasks other threads must run. Blocking
        # hooks run on at most min(concurrency, pool size) threads at once.
        threads = min(hooks.concurrency, hooks.thread_pool_size)
        self._threads = ThreadWaits(min(WAITING_THREADS, threads - 1))
        self._turns = LoopTurns()

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
            # A blocking hook runs in a thread of the pool, which ``ctx.map`` may keep only by permit.
            threads = None if inspect.iscoroutinefunction(group.resolved.processor.process) else self._threads
            turns = self._turns
            while queue and not slots.returning:
                if turns.spent():
                    # Hooks that never wait (CPU work in an async hook) would hold the loop for the
                    # whole queue: statuses, the master's dispatch and peer calls would wait too, and
                    # the instance's other workers sit idle meanwhile.
                    await asyncio.sleep(0)
                    continue
                info = queue.popleft()
                group.queued_ids.discard(info.task_id)
                self.add(group)
                seat = Seat(slots, self._hooks, on_free, threads)
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

    def _context(self, group: TaskGroup, info: TaskInfo, mapper: PeerMapper) -> JobContext:
        contexts = group.contexts
        if contexts is None:
            contexts = group.contexts = ContextFactory(
                group.spec,
                worker_addr=self._address(),
                codec=group.resolved.codec,
                loop=asyncio.get_running_loop(),
            )
        return contexts.make(info, mapper=mapper)

    async def _process(self, group: TaskGroup, info: TaskInfo, ctx: JobContext) -> ProcessResult:
        """One attempt of a map task's process hook, in a span continuing its master's instance span
        (StartTasks carried its context); only when tracing is on."""
        tracing = self._hooks.tracing
        attributes: dict[str, str | int] = {
            "sx.instance_id": group.spec.instance_id,
            "sx.task_id": info.task_id,
            "sx.task_attempt": info.task_attempt,
            "sx.worker_id": self._worker_id,
        }
        parent = group.spec.trace_context
        with tracing.span(f"sx.task {info.task_name}", parent=parent, attributes=attributes):
            return await self._hooks.call(group.resolved, "process", ctx)

    def _mapper(self, group: TaskGroup, seat: Seat) -> PeerMapper:
        return PeerMapper(peers=self._peers, group=group, worker_id=self._worker_id, seat=seat)

    async def _run(
        self, group: TaskGroup, info: TaskInfo, runner: asyncio.Task[None] | None, seat: Seat
    ) -> None:
        mapper = self._mapper(group, seat)
        try:
            ctx = self._context(group, info, mapper)
        except Exception as exc:
            group.report(info, TaskStatus.FAILED, f"bad task: {describe_exception(exc)}")
            return
        task = RunningTask(info=info, ctx=ctx, runner=runner)
        group.tasks[info.task_id] = task
        group.report(info, TaskStatus.RUNNING, "")
        options = group.spec.map_options
        retries = 0 if info.task_id == 0 else max(options.task_max_attempt, 0)
        hooks = self._hooks
        outcome: ProcessResult
        try:
            while True:
                if hooks.tracing.enabled:
                    outcome = await self._process(group, info, task.ctx)
                else:  # one coroutine less per subtask in the common case
                    outcome = await hooks.call(group.resolved, "process", task.ctx)
                if mapper.backlog:
                    outcome = await self._drain(mapper, seat, outcome)
                if outcome.ok or task.kill_reason is not None or info.task_attempt >= retries:
                    break
                if options.task_attempt_interval_s > 0:
                    await asyncio.sleep(options.task_attempt_interval_s)
                if task.kill_reason is not None:
                    break
                await seat.reclaim()
                info = dataclasses.replace(info, task_attempt=info.task_attempt + 1)
                task.info = info
                mapper = self._mapper(group, seat)
                task.ctx = self._context(group, info, mapper)
        except asyncio.CancelledError:
            outcome = ProcessResult.failure("killed")
        finally:
            mapper.stop()
        group.tasks.pop(info.task_id, None)
        if task.silent:
            group.pending.pop(info.task_id, None)
            return
        ok = outcome.ok and task.kill_reason is None
        result = task.kill_reason if task.kill_reason is not None else outcome.result
        group.report(info, TaskStatus.SUCCESS if ok else TaskStatus.FAILED, result)

    @staticmethod
    async def _drain(mapper: PeerMapper, seat: Seat, outcome: ProcessResult) -> ProcessResult:
        """The hook returned while its last batches are still sent in the background: the task ends
        when the master took them, and holds no consumer slot until then."""
        seat.vacate()
        try:
            await mapper.drain()
        except Exception as exc:
            return ProcessResult.failure(describe_exception(exc)) if outcome.ok else outcome
        return outcome
