"""The tasks masters start on this worker (``StartTasks``): run them here and report their statuses.

``TaskRunner`` runs the tasks of ``StartTasks`` requests under their instance's consumer limit and
reports their statuses to the instance's master in batches (``StatusSender``). Broadcast tasks get one
asyncio task each; map tasks (parallel, grid, batch) wait in a per-instance queue drained by
``consumerSize`` consumers (``MapConsumers``).

A worker holding tasks of a map instance whose master is elsewhere asks that master every
``master_check_interval`` seconds whether it still runs the instance; when it does not (or cannot be
reached twice in a row) the instance's tasks are stopped here without reports and it is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from sx.processors import ProcessResult, Registry, TaskStatus
from sx.processors.engine import describe_exception
from sx.protos.v1 import peer_pb2
from sx.worker._convert import TaskInfo, context_for, execute_mode_of
from sx.worker._hooks import HookRunner, SubmitRefused, resolve
from sx.worker._peer import PeerClients
from sx.worker.map._consumer import MapConsumers
from sx.worker.map._status_sender import StatusSender
from sx.worker.map._task_group import MAP_BATCH, RunningTask, Slots, TaskGroup

__all__ = ["MASTER_MISSES", "TaskRunner"]

log = logging.getLogger("sx.worker")

MASTER_MISSES = 2
"""Failed checks in a row after which a map instance's master counts as gone."""


class TaskRunner:
    """Runs tasks started by masters (``StartTasks``) and reports their statuses back in batches.

    Map tasks go to ``MapConsumers``; statuses to the master through ``StatusSender``.
    """

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
        self._groups: dict[int, TaskGroup] = {}
        self._consumers = MapConsumers(hooks=hooks, peers=peers, worker_id=worker_id, address=address)
        self._statuses = StatusSender(peers=peers, worker_id=worker_id, address=address, forget=self._forget)
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
            group = TaskGroup(
                spec=spec,
                master_address=request.master_address,
                master_worker_id=request.master_worker_id,
                resolved=resolved,
                consumers=asyncio.Semaphore(limit),
                slots=Slots(limit),
                is_map=execute_mode_of(spec).is_map,
            )
            queue_size = spec.map_options.queue_size
            if 0 < queue_size < MAP_BATCH:
                group.map_chunk = queue_size
            self._groups[spec.instance_id] = group
            group.flusher = asyncio.create_task(
                self._statuses.run(group), name=f"sx-task-statuses-{spec.instance_id}"
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
                group.report(info, TaskStatus.FAILED, f"bad task: {describe_exception(exc)}")
                continue
            task = RunningTask(info=info, ctx=ctx)
            group.tasks[info.task_id] = task
            task.runner = asyncio.create_task(
                self._run(group, task), name=f"sx-task-{spec.instance_id}-{info.task_id}"
            )
        return peer_pb2.StartTasksReply(accepted=True, rejected_task_ids=rejected)

    def _start_map(self, group: TaskGroup, request: peer_pb2.StartTasksRequest) -> peer_pb2.StartTasksReply:
        rejected: list[int] = []
        queue, queued_ids, running = group.queue, group.queued_ids, group.tasks
        for request_task in request.tasks:
            task_id = request_task.task_id
            if task_id in running or task_id in queued_ids:
                rejected.append(task_id)
                continue
            queue.append(TaskInfo.from_proto(request_task))
            queued_ids.add(task_id)
        self._consumers.add(group)
        return peer_pb2.StartTasksReply(accepted=True, rejected_task_ids=rejected)

    async def _run(self, group: TaskGroup, task: RunningTask) -> None:
        instance_id = group.spec.instance_id
        started = time.monotonic()
        outcome: ProcessResult
        try:
            async with group.consumers:
                if task.kill_reason is None:
                    group.report(task.info, TaskStatus.RUNNING, "")
                    log.info(
                        "task %s of instance %s (job %s) started",
                        task.info.task_id,
                        instance_id,
                        group.spec.job_id,
                    )
                    # A child of the master's instance span, whose context StartTasks carried.
                    with self._hooks.tracing.span(
                        "sx.broadcast.task",
                        parent=group.spec.trace_context,
                        attributes={"sx.instance_id": instance_id, "sx.task_id": task.info.task_id},
                    ):
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
        group.report(task.info, status, result)

    def _forget(self, group: TaskGroup) -> None:
        if self._groups.get(group.spec.instance_id) is group:
            del self._groups[group.spec.instance_id]
            if group.watcher is not None and group.watcher is not asyncio.current_task():
                group.watcher.cancel()

    async def _watch_master(self, group: TaskGroup) -> None:
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

    async def _drop(self, group: TaskGroup, why: str) -> None:
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
                    group.report(info, TaskStatus.FAILED, text)
                    dropped += 1
                else:
                    keep.append(info)
            group.queue = keep
        chosen = [t for t in group.tasks.values() if task_id in (0, t.info.task_id)]
        for task in chosen:
            task.kill_reason = task.kill_reason or text
        await asyncio.gather(*(self._stop(group, task) for task in chosen))
        return len(chosen) + dropped

    async def _stop(self, group: TaskGroup, task: RunningTask) -> None:
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
