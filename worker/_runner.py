"""Running processor hooks and the tasks a master starts on this worker.

``HookRunner`` calls one hook under the worker-wide concurrency limit (async hooks on the loop, blocking
ones in a bounded thread pool). ``TaskRunner`` runs the tasks of ``StartTasks`` requests under their
instance's consumer limit and reports their statuses to the instance's master in batches.

Broadcast tasks get one asyncio task each. Map tasks (parallel, grid, batch) wait in a per-instance
queue drained by ``consumerSize`` consumers, retry locally (``taskMaxAttempt``; never the root) and
send their ``ctx.map`` batches to the master through ``PeerMapper``. A map task waiting for room in the
master's full queue gives its consumer slot and its hook slot back meanwhile (``_Seat``): the tasks
that drain the queue must be able to run. A sync hook waiting in ``ctx.map`` still holds its thread.

A worker holding tasks of a map instance whose master is elsewhere asks that master every
``master_check_interval`` seconds whether it still runs the instance; when it does not (or cannot be
reached twice in a row) the instance's tasks are stopped here without reports and it is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sx.processors._codec import JSON_CODEC, Codec
from sx.processors._context import JobContext, TaskMapper
from sx.processors._enums import ROOT_TASK_NAME, JobType, TaskStatus
from sx.processors._errors import CancelledError, RegistryError, SxError
from sx.processors._invoke import describe_exception, invoke
from sx.processors._kinds import Processor
from sx.processors._registry import ProcessorDefinition, Registry
from sx.processors._result import ProcessResult
from sx.processors._scripts import script_processor_for
from sx.protos.v1 import common_pb2, peer_pb2
from sx.worker._convert import TaskInfo, context_for, execute_mode_of, job_type_of

if TYPE_CHECKING:
    from ._peer import PeerClients

log = logging.getLogger("sx.worker")

SCRIPT_JOB_TYPES = (JobType.PYTHON, JobType.SHELL, JobType.GO)


class SubmitRefused(Exception):
    """An instance or task this worker cannot run; the message goes back to the sender."""


class MapRefusedError(SxError):
    """The instance's master refused a ``ctx.map`` batch (the instance ended, or a mode cap was hit)."""


MAP_BATCH = 1000
"""Payloads per map batch (numbered, so a task run again maps nothing twice) and per ``MapTasks`` call."""
MASTER_MISSES = 2
"""Failed checks in a row after which a map instance's master counts as gone."""
STATUS_BATCH = 5000
"""Statuses per ``ReportTaskStatuses`` call."""
MAP_IDLE_FORGET = 60.0
"""Seconds an idle map instance stays known on a worker whose master sent no ``DestroyInstance``."""

_Update = tuple[int, int, str, str, int]
"""A task status not sent yet: (task id, status, result, task name, task attempt)."""

# The JobContext fields that differ from one task of an instance to the next; the others are worked out
# once per instance (see _ContextFactory).
_PER_TASK_FIELDS = frozenset(
    {
        "task_id",
        "task_name",
        "task",
        "task_payload",
        "task_attempt",
        "sharding_id",
        "sharding_num",
        "sharding_parameter",
        "upstream_data",
        "task_results",
        "task_statuses",
        "mapper",
        "loop",
    }
)


class _ContextFactory:
    """Makes the contexts of one instance's tasks; what comes from the instance is computed once.

    ``context_for`` parses times, enums and options from the spec on every call, which costs more than
    running a no-op subtask; a map instance can have a million tasks.
    """

    def __init__(
        self,
        spec: common_pb2.InstanceSpec,
        *,
        worker_addr: str,
        codec: Codec,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        template = context_for(spec, worker_addr=worker_addr, task=TaskInfo(), codec=codec)
        self._shared = {
            f.name: getattr(template, f.name)
            for f in dataclasses.fields(JobContext)
            if f.init and f.name not in _PER_TASK_FIELDS
        }
        self._upstream = template.upstream_data
        self._codec = codec
        self._loop = loop

    def make(self, info: TaskInfo, *, mapper: TaskMapper) -> JobContext:
        payload = info.payload
        return JobContext(
            **self._shared,
            task_id=info.task_id,
            task_name=info.task_name or ROOT_TASK_NAME,
            task=self._codec.decode(payload) if payload else None,
            task_payload=payload,
            task_attempt=info.task_attempt,
            sharding_id=info.sharding_id,
            sharding_num=info.sharding_num,
            sharding_parameter=info.sharding_parameter,
            upstream_data=list(self._upstream),
            mapper=mapper,
            loop=self._loop,
        )


@dataclass(frozen=True, slots=True)
class Resolved:
    """The processor object that runs an instance's hooks on this worker."""

    processor: Processor
    definition: ProcessorDefinition | None
    """None for script jobs."""
    codec: Codec

    def has_hook(self, hook: str) -> bool:
        if self.definition is None:
            return hook in ("process", "kill")
        return self.definition.has_hook(hook)


def resolve(registry: Registry, spec: common_pb2.InstanceSpec) -> Resolved:
    """Find what runs ``spec``: its registered processor, or a script processor for script jobs.

    Raises ``SubmitRefused`` with a message naming the processor (or job type) when there is none.
    """
    try:
        execute_mode_of(spec)
        job_type = job_type_of(spec)
    except ValueError as exc:
        raise SubmitRefused(str(exc)) from None
    if spec.processor:
        try:
            definition = registry.get(spec.processor)
        except RegistryError:
            raise SubmitRefused(f"processor {spec.processor!r} is not registered here") from None
        return Resolved(processor=definition.create(), definition=definition, codec=definition.codec)
    if spec.content and job_type in SCRIPT_JOB_TYPES:
        return Resolved(processor=script_processor_for(job_type), definition=None, codec=JSON_CODEC)
    raise SubmitRefused(
        f"instance {spec.instance_id} of job {spec.job_name!r} names no processor and has no script content"
    )


class HookRunner:
    """Calls processor hooks under the worker-wide limit on hooks running at once."""

    def __init__(self, *, concurrency: int, thread_pool_size: int) -> None:
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=thread_pool_size, thread_name_prefix="sx-hook")
        self.running = 0

    async def call(self, resolved: Resolved, hook: str, ctx: JobContext) -> ProcessResult:
        """Run ``hook`` of ``resolved``'s processor; failures come back as FAILED results."""
        async with self._slots:
            self.running += 1
            try:
                return await self._invoke(resolved, hook, ctx)
            finally:
                self.running -= 1

    async def call_kill(self, resolved: Resolved, ctx: JobContext) -> None:
        """Mark ``ctx`` cancelled and call the processor's kill hook (outside the limit: it must not wait)."""
        ctx.cancel()
        if not resolved.has_hook("kill"):
            return
        outcome = await self._invoke(resolved, "kill", ctx)
        if not outcome.ok:
            log.warning("kill hook of instance %s failed: %s", ctx.instance_id, outcome.result)

    async def _invoke(self, resolved: Resolved, hook: str, ctx: JobContext) -> ProcessResult:
        function = getattr(resolved.processor, hook)
        try:
            return await invoke(function, ctx, executor=self._pool)
        except Exception as exc:  # invoke reports hook failures itself; this is a defect in the worker
            log.exception("calling %s of instance %s failed", hook, ctx.instance_id)
            return ProcessResult.failure(describe_exception(exc))

    def lend(self) -> None:
        """A running hook waits for work other hooks must do first (room in a map queue): free its slot."""
        self.running -= 1
        self._slots.release()

    async def take_back(self) -> None:
        """Take back the slot ``lend`` freed. Completes even if the caller is cancelled meanwhile: the
        end of ``call`` releases the slot in any case, so it must be held again by then."""
        self.running += 1
        await asyncio.shield(asyncio.ensure_future(self._slots.acquire()))

    def close(self) -> None:
        """Stop the thread pool without waiting: a blocking hook ignoring cancellation may never return."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Slots:
    """The consumer slots of one map instance on this worker: at most ``limit`` of its tasks run.

    A task giving its slot back while it waits (``_Seat``) takes one again with ``take_back``, ahead of
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
class _Seat:
    """A running map task's consumer slot and hook slot, given back while it waits in ``ctx.map``."""

    slots: _Slots
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
class _Task:
    info: TaskInfo
    ctx: JobContext
    runner: asyncio.Task[None] | None = None
    kill_reason: str | None = None
    silent: bool = False
    """Report nothing when it ends: a map task stopped by a shutdown is the master's to send elsewhere."""


@dataclass(eq=False)
class _TaskGroup:
    """The tasks of one instance on this worker, and the statuses not yet delivered to its master."""

    spec: common_pb2.InstanceSpec
    master_address: str
    master_worker_id: str
    resolved: Resolved
    consumers: asyncio.Semaphore
    """Broadcast tasks run under it; map tasks under ``slots``."""
    slots: _Slots
    is_map: bool = False
    tasks: dict[int, _Task] = field(default_factory=dict)
    pending: dict[int, _Update] = field(default_factory=dict)
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
    contexts: _ContextFactory | None = None
    on_free: Callable[[], None] = lambda: None
    map_chunk: int = MAP_BATCH
    """Payloads per MapTasks call: at most the master's queue size (more would only be sent again)."""
    watcher: asyncio.Task[None] | None = None
    """Checks that the master (on another worker) still runs the instance."""

    @property
    def idle(self) -> bool:
        return not self.tasks and not self.pending and not self.queue and self.consumers_running == 0


class PeerMapper:
    """Sends one task run's ``ctx.map`` batches to its instance's master (``MapTasks``).

    Batches are numbered from 0 for each run, so the master takes each batch of a task once even when
    the task runs again. The master takes what fits in its queue and says how much (``taken``); the
    rest is sent again, and meanwhile the task gives its slots back (``seat``) and the calls may wait
    at the master for room (``wait``).
    """

    def __init__(
        self, *, peers: PeerClients, group: _TaskGroup, worker_id: str, seat: _Seat | None = None
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


class TaskRunner:
    """Runs tasks started by masters (``StartTasks``) and reports their statuses back in batches."""

    FLUSH_DELAY = 0.05
    """Seconds to gather more statuses before sending a batch."""
    DELIVERY_PATIENCE = 60.0
    """Seconds to keep re-sending statuses to an unreachable master before dropping them."""

    def __init__(
        self,
        *,
        hooks: HookRunner,
        registry: Registry,
        peers: PeerClients,
        worker_id: str,
        address: Callable[[], str],
        master_check_interval: float = 5.0,
    ) -> None:
        self.master_check_interval = master_check_interval
        self._hooks = hooks
        self._registry = registry
        self._peers = peers
        self._worker_id = worker_id
        self._address = address
        self._groups: dict[int, _TaskGroup] = {}
        self.accepting = True

    @property
    def instance_ids(self) -> list[int]:
        return list(self._groups)

    @property
    def running(self) -> int:
        return sum(len(group.tasks) for group in self._groups.values())

    def holds(self, instance_id: int) -> bool:
        """True while this worker runs tasks of the instance or still owes its master statuses."""
        return instance_id in self._groups

    def start(self, request: peer_pb2.StartTasksRequest) -> peer_pb2.StartTasksReply:
        """Accept the request's tasks and start them; refuses the whole request when it cannot run it."""
        spec = request.instance
        if not self.accepting:
            return peer_pb2.StartTasksReply(accepted=False, message="worker is shutting down")
        group = self._groups.get(spec.instance_id)
        if group is None:
            try:
                resolved = resolve(self._registry, spec)
            except SubmitRefused as exc:
                return peer_pb2.StartTasksReply(accepted=False, message=str(exc))
            limit = spec.map_options.consumer_size if spec.HasField("map_options") else 0
            limit = limit if limit > 0 else self._hooks.concurrency
            group = _TaskGroup(
                spec=spec,
                master_address=request.master_address,
                master_worker_id=request.master_worker_id,
                resolved=resolved,
                consumers=asyncio.Semaphore(limit),
                slots=_Slots(limit),
                is_map=execute_mode_of(spec).is_map,
            )
            group.on_free = functools.partial(self._add_consumer, group)
            queue_size = spec.map_options.queue_size
            if 0 < queue_size < MAP_BATCH:
                group.map_chunk = queue_size
            self._groups[spec.instance_id] = group
            group.flusher = asyncio.create_task(
                self._flush_loop(group), name=f"sx-task-statuses-{spec.instance_id}"
            )
            if group.is_map:
                group.watcher = asyncio.create_task(
                    self._watch_master(group), name=f"sx-task-master-{spec.instance_id}"
                )
        elif request.master_address and request.master_address != group.master_address:
            # A new master took the instance over (resume): statuses go to it from now on.
            group.master_address = request.master_address
            group.master_worker_id = request.master_worker_id
        if group.is_map:
            return self._start_map(group, request)
        rejected: list[int] = []
        for request_task in request.tasks:
            if request_task.task_id in group.tasks:
                rejected.append(request_task.task_id)
                continue
            info = TaskInfo.from_proto(request_task)
            try:
                ctx = context_for(
                    spec,
                    worker_addr=self._address(),
                    task=info,
                    codec=group.resolved.codec,
                    loop=asyncio.get_running_loop(),
                )
            except Exception as exc:
                self._queue_update(group, info, TaskStatus.FAILED, f"bad task: {describe_exception(exc)}")
                continue
            task = _Task(info=info, ctx=ctx)
            group.tasks[info.task_id] = task
            task.runner = asyncio.create_task(
                self._run(group, task), name=f"sx-task-{spec.instance_id}-{info.task_id}"
            )
        return peer_pb2.StartTasksReply(accepted=True, rejected_task_ids=rejected)

    def _start_map(self, group: _TaskGroup, request: peer_pb2.StartTasksRequest) -> peer_pb2.StartTasksReply:
        rejected: list[int] = []
        queue, queued_ids, running = group.queue, group.queued_ids, group.tasks
        for request_task in request.tasks:
            task_id = request_task.task_id
            if task_id in running or task_id in queued_ids:
                rejected.append(task_id)
                continue
            queue.append(TaskInfo.from_proto(request_task))
            queued_ids.add(task_id)
        self._add_consumer(group)
        return peer_pb2.StartTasksReply(accepted=True, rejected_task_ids=rejected)

    def _add_consumer(self, group: _TaskGroup) -> None:
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

    async def _consume(self, group: _TaskGroup) -> None:
        """Run queued tasks of the instance in the slot this consumer was started with."""
        group.consumer_starting = False
        owns = True
        try:
            queue = group.queue
            slots = group.slots
            me = asyncio.current_task()
            while queue and not slots.returning:
                info = queue.popleft()
                group.queued_ids.discard(info.task_id)
                self._add_consumer(group)
                seat = _Seat(slots, self._hooks, group.on_free)
                await self._run_map_task(group, info, me, seat)
                if not seat.held:
                    owns = False  # stopped while waiting for its slot back: this consumer has none
                    break
        finally:
            group.consumers_running -= 1
            if owns:
                group.slots.release()
            self._add_consumer(group)
            group.wake.set()

    def _map_context(self, group: _TaskGroup, info: TaskInfo, seat: _Seat | None = None) -> JobContext:
        contexts = group.contexts
        if contexts is None:
            contexts = group.contexts = _ContextFactory(
                group.spec,
                worker_addr=self._address(),
                codec=group.resolved.codec,
                loop=asyncio.get_running_loop(),
            )
        return contexts.make(
            info, mapper=PeerMapper(peers=self._peers, group=group, worker_id=self._worker_id, seat=seat)
        )

    async def _run_map_task(
        self, group: _TaskGroup, info: TaskInfo, runner: asyncio.Task[None] | None, seat: _Seat
    ) -> None:
        try:
            ctx = self._map_context(group, info, seat)
        except Exception as exc:
            self._queue_update(group, info, TaskStatus.FAILED, f"bad task: {describe_exception(exc)}")
            return
        task = _Task(info=info, ctx=ctx, runner=runner)
        group.tasks[info.task_id] = task
        self._queue_update(group, info, TaskStatus.RUNNING, "")
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
                task.ctx = self._map_context(group, info, seat)
        except asyncio.CancelledError:
            outcome = ProcessResult.failure("killed")
        group.tasks.pop(info.task_id, None)
        if task.silent:
            group.pending.pop(info.task_id, None)
            return
        ok = outcome.ok and task.kill_reason is None
        result = task.kill_reason if task.kill_reason is not None else outcome.result
        self._queue_update(group, info, TaskStatus.SUCCESS if ok else TaskStatus.FAILED, result)

    async def _run(self, group: _TaskGroup, task: _Task) -> None:
        instance_id = group.spec.instance_id
        started = time.monotonic()
        outcome: ProcessResult
        try:
            async with group.consumers:
                if task.kill_reason is None:
                    self._queue_update(group, task.info, TaskStatus.RUNNING, "")
                    log.info(
                        "task %s of instance %s (job %s) started",
                        task.info.task_id,
                        instance_id,
                        group.spec.job_id,
                    )
                    outcome = await self._hooks.call(group.resolved, "process", task.ctx)
                else:
                    outcome = ProcessResult.failure("killed")
        except asyncio.CancelledError:
            outcome = ProcessResult.failure("killed")
        result = outcome.result
        if task.kill_reason is not None:
            result = task.kill_reason
        status = TaskStatus.SUCCESS if outcome.ok and task.kill_reason is None else TaskStatus.FAILED
        log.info(
            "task %s of instance %s ended %s in %.3fs",
            task.info.task_id,
            instance_id,
            status.name,
            time.monotonic() - started,
        )
        group.tasks.pop(task.info.task_id, None)
        self._queue_update(group, task.info, status, result)

    def _queue_update(self, group: _TaskGroup, info: TaskInfo, status: TaskStatus, result: str) -> None:
        # A tuple now, a message only when sent: most RUNNING statuses are replaced before that.
        group.pending[info.task_id] = (info.task_id, int(status), result, info.task_name, info.task_attempt)
        group.wake.set()

    async def _flush_loop(self, group: _TaskGroup) -> None:
        instance_id = group.spec.instance_id
        delay = 0.1
        failing_since: float | None = None
        while True:
            if group.is_map and not group.destroyed:
                # A map instance stays known between pages until its master destroys it; a master
                # that died without doing so is forgotten after a while.
                try:
                    await asyncio.wait_for(group.wake.wait(), timeout=MAP_IDLE_FORGET)
                except TimeoutError:
                    if group.idle:
                        self._forget(group)
                        return
                    continue
            else:
                await group.wake.wait()
            if group.is_map:
                # Map tasks are short and the master's window per worker is small: statuses go out as
                # soon as the loop is idle. One report is in flight at a time, so while it travels the
                # next batch gathers by itself.
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(self.FLUSH_DELAY)
            group.wake.clear()
            pending = group.pending
            if pending:
                if len(pending) <= STATUS_BATCH:
                    batch, group.pending = list(pending.values()), {}
                else:
                    keys = list(pending)[:STATUS_BATCH]
                    batch = [pending.pop(k) for k in keys]
                    group.wake.set()
                try:
                    client = self._peers.client(group.master_address)
                    await client.ReportTaskStatuses(
                        peer_pb2.TaskStatusBatch(
                            instance_id=instance_id,
                            worker_id=self._worker_id,
                            worker_address=self._address(),
                            updates=[
                                peer_pb2.TaskStatusUpdate(
                                    task_id=i, status=st, result=r, task_name=n, task_attempt=a
                                )
                                for i, st, r, n, a in batch
                            ],
                        )
                    )
                    delay, failing_since = 0.1, None
                except Exception as exc:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > self.DELIVERY_PATIENCE or group.destroyed:
                        log.warning(
                            "dropping %d task statuses of instance %s: master %s unreachable: %s",
                            len(batch),
                            instance_id,
                            group.master_address,
                            exc,
                        )
                    else:
                        # Put them back in front; a newer status of the same task stays the newer one.
                        newer = group.pending
                        group.pending = {u[0]: u for u in batch}
                        group.pending.update(newer)
                        group.wake.set()
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
            if group.idle and (not group.is_map or group.destroyed):
                # Everything ran and the master has every status: nothing of the instance stays here.
                self._forget(group)
                return

    def _forget(self, group: _TaskGroup) -> None:
        if self._groups.get(group.spec.instance_id) is group:
            del self._groups[group.spec.instance_id]
            if group.watcher is not None and group.watcher is not asyncio.current_task():
                group.watcher.cancel()

    async def _watch_master(self, group: _TaskGroup) -> None:
        """Drop the instance here once its master is gone: no one else would ever destroy it."""
        instance_id = group.spec.instance_id
        request = peer_pb2.CheckAliveRequest(instance_id=instance_id, master=True)
        misses = 0
        while True:
            await asyncio.sleep(self.master_check_interval)
            if self._groups.get(instance_id) is not group or group.destroyed:
                return
            address = group.master_address
            if address == self._address():
                continue  # the master is in this process and destroys the instance itself
            try:
                reply = await self._peers.client(address).CheckAlive(request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                misses += 1
                if misses < MASTER_MISSES:
                    continue
                why = f"its master {address} is unreachable: {describe_exception(exc)}"
            else:
                misses = 0
                if reply.alive or address != group.master_address:
                    continue  # alive, or a new master took over while the check travelled
                why = f"its master {address} no longer runs it"
            if self._groups.get(instance_id) is group and not group.destroyed:
                await self._drop(group, why)
            return

    async def _drop(self, group: _TaskGroup, why: str) -> None:
        """Stop the instance's tasks here without reporting them, and forget it."""
        log.warning(
            "instance %s: %s; dropping its %d running and %d queued task(s) here",
            group.spec.instance_id,
            why,
            len(group.tasks),
            len(group.queue),
        )
        group.destroyed = True
        group.queue.clear()
        group.queued_ids.clear()
        group.pending.clear()
        tasks = list(group.tasks.values())
        for task in tasks:
            task.kill_reason = task.kill_reason or f"killed: {why}"
            task.silent = True
        await asyncio.gather(*(self._stop(group, task) for task in tasks))
        group.wake.set()

    async def kill(self, instance_id: int, *, task_id: int = 0, reason: str = "") -> int:
        """Stop the instance's tasks here (one task when ``task_id`` is set); returns how many."""
        group = self._groups.get(instance_id)
        if group is None:
            return 0
        text = f"killed: {reason}" if reason else "killed"
        dropped = 0
        if group.queue:
            keep: deque[TaskInfo] = deque()
            for info in group.queue:
                if task_id in (0, info.task_id):
                    group.queued_ids.discard(info.task_id)
                    self._queue_update(group, info, TaskStatus.FAILED, text)
                    dropped += 1
                else:
                    keep.append(info)
            group.queue = keep
        chosen = [t for t in group.tasks.values() if task_id in (0, t.info.task_id)]
        for task in chosen:
            task.kill_reason = task.kill_reason or text
        await asyncio.gather(*(self._stop(group, task) for task in chosen))
        return len(chosen) + dropped

    async def _stop(self, group: _TaskGroup, task: _Task) -> None:
        await self._hooks.call_kill(group.resolved, task.ctx)
        if task.runner is not None and not task.runner.done():
            task.runner.cancel()

    async def destroy(self, instance_id: int) -> None:
        """Drop the instance: stop its tasks if any still run, and forget it once statuses are sent."""
        group = self._groups.get(instance_id)
        if group is None:
            return
        if group.tasks or group.queue:
            await self.kill(instance_id, reason="instance destroyed")
        group.destroyed = True
        group.wake.set()

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no task runs and every status is delivered (or dropped); False on timeout."""
        deadline = time.monotonic() + seconds
        while self._groups:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self, *, reason: str) -> None:
        """Stop every task (reporting FAILED ``reason``) and give the statuses a moment to reach masters."""
        self.accepting = False
        for group in list(self._groups.values()):
            # Map tasks are not failed: the master notices this worker is gone and sends them elsewhere.
            group.queue.clear()
            group.queued_ids.clear()
            for task in group.tasks.values():
                task.kill_reason = reason
                task.silent = group.is_map
            await asyncio.gather(*(self._stop(group, t) for t in list(group.tasks.values())))
        await self.wait_idle(5.0)
        for group in list(self._groups.values()):
            if group.watcher is not None:
                group.watcher.cancel()
            if group.flusher is not None:
                group.flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await group.flusher
            self._forget(group)
