"""Running processor hooks and the tasks a master starts on this worker.

``HookRunner`` calls one hook under the worker-wide concurrency limit (async hooks on the loop, blocking
ones in a bounded thread pool). ``TaskRunner`` runs the tasks of ``StartTasks`` requests under their
instance's consumer limit and reports their statuses to the instance's master in batches; broadcast
uses it today and the map modes are meant to reuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sx.processors._codec import JSON_CODEC, Codec
from sx.processors._context import JobContext
from sx.processors._enums import JobType, TaskStatus
from sx.processors._errors import RegistryError
from sx.processors._invoke import describe_exception, invoke
from sx.processors._kinds import Processor
from sx.processors._registry import ProcessorDefinition, Registry
from sx.processors._result import ProcessResult
from sx.processors._scripts import script_processor_for
from sx.protos.v1 import common_pb2, peer_pb2

from ._convert import TaskInfo, context_for, execute_mode_of, job_type_of

if TYPE_CHECKING:
    from ._peer import PeerClients

log = logging.getLogger("sx.worker")

SCRIPT_JOB_TYPES = (JobType.PYTHON, JobType.SHELL, JobType.GO)


class SubmitRefused(Exception):
    """An instance or task this worker cannot run; the message goes back to the sender."""


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

    def close(self) -> None:
        """Stop the thread pool without waiting: a blocking hook ignoring cancellation may never return."""
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(eq=False)
class _Task:
    info: TaskInfo
    ctx: JobContext
    runner: asyncio.Task[None] | None = None
    kill_reason: str | None = None


@dataclass(eq=False)
class _TaskGroup:
    """The tasks of one instance on this worker, and the statuses not yet delivered to its master."""

    spec: common_pb2.InstanceSpec
    master_address: str
    master_worker_id: str
    resolved: Resolved
    consumers: asyncio.Semaphore
    tasks: dict[int, _Task] = field(default_factory=dict)
    pending: list[peer_pb2.TaskStatusUpdate] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    flusher: asyncio.Task[None] | None = None
    destroyed: bool = False


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
    ) -> None:
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
            group = _TaskGroup(
                spec=spec,
                master_address=request.master_address,
                master_worker_id=request.master_worker_id,
                resolved=resolved,
                consumers=asyncio.Semaphore(limit if limit > 0 else self._hooks.concurrency),
            )
            self._groups[spec.instance_id] = group
            group.flusher = asyncio.create_task(
                self._flush_loop(group), name=f"sx-task-statuses-{spec.instance_id}"
            )
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
        group.pending.append(
            peer_pb2.TaskStatusUpdate(
                task_id=info.task_id,
                status=int(status),
                result=result,
                task_name=info.task_name,
                task_attempt=info.task_attempt,
            )
        )
        group.wake.set()

    async def _flush_loop(self, group: _TaskGroup) -> None:
        instance_id = group.spec.instance_id
        delay = 0.1
        failing_since: float | None = None
        while True:
            await group.wake.wait()
            await asyncio.sleep(self.FLUSH_DELAY)
            group.wake.clear()
            batch, group.pending = group.pending, []
            if batch:
                try:
                    client = self._peers.client(group.master_address)
                    await client.ReportTaskStatuses(
                        peer_pb2.TaskStatusBatch(
                            instance_id=instance_id,
                            worker_id=self._worker_id,
                            worker_address=self._address(),
                            updates=batch,
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
                        group.pending[:0] = batch
                        group.wake.set()
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
            if not group.tasks and not group.pending:
                # Everything ran and the master has every status: nothing of the instance stays here.
                self._forget(group)
                return

    def _forget(self, group: _TaskGroup) -> None:
        if self._groups.get(group.spec.instance_id) is group:
            del self._groups[group.spec.instance_id]

    async def kill(self, instance_id: int, *, task_id: int = 0, reason: str = "") -> int:
        """Stop the instance's tasks here (one task when ``task_id`` is set); returns how many."""
        group = self._groups.get(instance_id)
        if group is None:
            return 0
        text = f"killed: {reason}" if reason else "killed"
        chosen = [t for t in group.tasks.values() if task_id in (0, t.info.task_id)]
        for task in chosen:
            task.kill_reason = task.kill_reason or text
        await asyncio.gather(*(self._stop(group, task) for task in chosen))
        return len(chosen)

    async def _stop(self, group: _TaskGroup, task: _Task) -> None:
        await self._hooks.call_kill(group.resolved, task.ctx)
        if task.runner is not None and not task.runner.done():
            task.runner.cancel()

    async def destroy(self, instance_id: int) -> None:
        """Drop the instance: stop its tasks if any still run, and forget it once statuses are sent."""
        group = self._groups.get(instance_id)
        if group is None:
            return
        if group.tasks:
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
        for instance_id, group in list(self._groups.items()):
            for task in group.tasks.values():
                task.kill_reason = reason
            await asyncio.gather(*(self._stop(group, t) for t in list(group.tasks.values())))
            del instance_id
        await self.wait_idle(5.0)
        for group in list(self._groups.values()):
            if group.flusher is not None:
                group.flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await group.flusher
            self._forget(group)
