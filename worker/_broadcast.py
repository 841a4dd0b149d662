"""The master of a broadcast instance: pre_process once, one task per worker, post_process once."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from sx.processors import InstanceStatus, JobContext, ProcessResult, TaskStatus
from sx.processors.engine import shorten_head
from sx.protos.v1 import common_pb2, peer_pb2
from sx.worker._convert import TaskInfo, context_for
from sx.worker._hooks import HookRunner, Resolved
from sx.worker._outcome import Outcome, error_text
from sx.worker._peer import PeerClients

__all__ = ["BroadcastMaster"]

log = logging.getLogger("sx.worker")


@dataclass(eq=False)
class _Slot:
    """One worker's task: sharding id = task id."""

    sharding_id: int
    worker: common_pb2.WorkerRef
    status: TaskStatus = TaskStatus.INIT
    result: str = ""

    @property
    def finished(self) -> bool:
        return self.status.finished


@dataclass(eq=False)
class BroadcastMaster:
    """Runs one broadcast instance from the worker it was submitted to.

    The task statuses arrive through ``on_statuses`` (the Peer service routes them here by instance id).
    ``alive_interval`` is how often workers with unfinished tasks are asked ``CheckAlive``.
    """

    spec: common_pb2.InstanceSpec
    resolved: Resolved
    hooks: HookRunner
    peers: PeerClients
    worker_id: str
    address: str
    alive_interval: float = 5.0
    _slots: dict[int, _Slot] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _killed: str | None = None
    _hook_ctx: JobContext | None = None
    _count: int = 1

    def on_statuses(self, batch: peer_pb2.TaskStatusBatch) -> None:
        """Apply a batch of task statuses; a finished status is never overwritten."""
        for update in batch.updates:
            slot = self._slots.get(update.task_id)
            if slot is None or slot.finished:
                continue
            try:
                status = TaskStatus(update.status)
            except ValueError:
                log.warning(
                    "instance %s: ignoring unknown task status %s", self.spec.instance_id, update.status
                )
                continue
            slot.status, slot.result = status, update.result
        self._changed.set()

    async def run(self) -> Outcome:
        """Run the instance to its outcome; cancelled when the instance is killed."""
        spec = self.spec
        workers = list(spec.workers) or [common_pb2.WorkerRef(worker_id=self.worker_id, address=self.address)]
        count = self._count = len(workers)
        if self.resolved.has_hook("pre_process"):
            pre = await self._call_hook("pre_process", self._context())
            if not pre.ok:
                return Outcome(InstanceStatus.FAILED, shorten_head(f"pre_process failed: {pre.result}"))
        if self._killed is not None:
            # The hook call absorbs the cancellation; nothing may be dispatched after a kill.
            return Outcome(InstanceStatus.FAILED, self._killed)
        self._slots = {i: _Slot(sharding_id=i, worker=w) for i, w in enumerate(workers)}
        try:
            await asyncio.gather(*(self._dispatch(slot, count) for slot in self._slots.values()))
            await self._wait_all()
            post = await self._post_process()
            return self._outcome(post)
        finally:
            await self._destroy_everywhere()

    async def kill(self, reason: str) -> None:
        """Stop every worker's task of this instance (the caller cancels ``run``)."""
        self._killed = reason
        if self._hook_ctx is not None:
            self._hook_ctx.cancel()
        request = peer_pb2.PeerKillRequest(instance_id=self.spec.instance_id, reason=reason)
        await asyncio.gather(
            *(self._call_quietly(slot, "KillInstance", request) for slot in self._slots.values()),
        )

    async def _call_hook(self, hook: str, ctx: JobContext) -> ProcessResult:
        self._hook_ctx = ctx
        try:
            return await self.hooks.call(self.resolved, hook, ctx)
        finally:
            self._hook_ctx = None

    def _context(self, *, with_results: bool = False) -> JobContext:
        results: dict[int, str] = {}
        statuses: dict[int, TaskStatus] = {}
        if with_results:
            results = {i: s.result for i, s in self._slots.items()}
            statuses = {i: s.status for i, s in self._slots.items()}
        # pre_process and post_process see how many workers the instance runs on, as ``process`` does.
        return context_for(
            self.spec,
            worker_addr=self.address,
            task=TaskInfo(sharding_num=self._count),
            codec=self.resolved.codec,
            loop=asyncio.get_running_loop(),
            task_results=results,
            task_statuses=statuses,
        )

    async def _dispatch(self, slot: _Slot, count: int) -> None:
        request = peer_pb2.StartTasksRequest(
            instance=self.spec,
            master_address=self.address,
            master_worker_id=self.worker_id,
            tasks=[
                peer_pb2.TaskRequest(
                    task_id=slot.sharding_id,
                    task_name=f"broadcast-{slot.sharding_id}",
                    sharding_id=slot.sharding_id,
                    sharding_num=count,
                )
            ],
        )
        try:
            reply = await self.peers.client(slot.worker.address).StartTasks(request)
        except Exception as exc:
            self._fail(slot, f"could not start the task: {error_text(exc)}")
            return
        if not reply.accepted:
            self._fail(slot, f"refused the task: {reply.message}")
        elif slot.sharding_id in reply.rejected_task_ids:
            self._fail(slot, "refused the task: it already runs there")

    def _fail(self, slot: _Slot, why: str) -> None:
        if not slot.finished:
            slot.status, slot.result = TaskStatus.FAILED, shorten_head(why)
            self._changed.set()

    async def _wait_all(self) -> None:
        while not all(slot.finished for slot in self._slots.values()):
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=self.alive_interval)
            except TimeoutError:
                await self._check_alive()

    async def _check_alive(self) -> None:
        request = peer_pb2.CheckAliveRequest(instance_id=self.spec.instance_id)
        unfinished = [slot for slot in self._slots.values() if not slot.finished]

        async def check(slot: _Slot) -> None:
            try:
                reply = await self.peers.client(slot.worker.address).CheckAlive(request)
            except Exception as exc:
                self._fail(slot, f"worker is not reachable: {error_text(exc)}")
                return
            if not reply.alive:
                self._fail(slot, "worker no longer runs the task (it restarted or lost it)")

        await asyncio.gather(*(check(slot) for slot in unfinished))

    async def _post_process(self) -> ProcessResult | None:
        if not self.resolved.has_hook("post_process"):
            return None
        return await self._call_hook("post_process", self._context(with_results=True))

    def _outcome(self, post: ProcessResult | None) -> Outcome:
        progress = self._progress()
        failed = [slot for slot in self._slots.values() if slot.status is not TaskStatus.SUCCESS]
        if failed:
            parts = [
                f"sharding {s.sharding_id} on worker {s.worker.worker_id} ({s.worker.address}): {s.result}"
                for s in failed
            ]
            text = f"{len(failed)} of {len(self._slots)} worker(s) failed: " + "; ".join(parts)
            return Outcome(InstanceStatus.FAILED, shorten_head(text), progress)
        if post is not None and not post.ok:
            return Outcome(
                InstanceStatus.FAILED, shorten_head(f"post_process failed: {post.result}"), progress
            )
        if post is not None and post.result:
            return Outcome(InstanceStatus.SUCCESS, post.result, progress)
        return Outcome(InstanceStatus.SUCCESS, f"{len(self._slots)} worker(s) succeeded", progress)

    def _progress(self) -> str:
        workers = [
            {
                "workerAddr": slot.worker.address,
                "workerId": slot.worker.worker_id,
                "total": 1,
                "running": int(slot.status is TaskStatus.RUNNING),
                "success": int(slot.status is TaskStatus.SUCCESS),
                "failed": int(slot.status is TaskStatus.FAILED),
            }
            for slot in self._slots.values()
        ]
        return json.dumps({"workerProgress": workers}, separators=(",", ":"))

    async def _destroy_everywhere(self) -> None:
        request = peer_pb2.DestroyRequest(instance_id=self.spec.instance_id)
        await asyncio.gather(
            *(self._call_quietly(slot, "DestroyInstance", request) for slot in self._slots.values())
        )

    async def _call_quietly(self, slot: _Slot, method: str, request: object) -> None:
        try:
            await getattr(self.peers.client(slot.worker.address), method)(request)
        except Exception as exc:
            log.debug(
                "instance %s: %s on %s failed: %s", self.spec.instance_id, method, slot.worker.address, exc
            )
