"""The instances this worker is the master of: accepting a submission, running it in its mode
(standalone, broadcast, or a map master with its task store), killing, suspending and reporting it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from grpc import aio

from sx.processors import ExecuteMode, InstanceStatus, JobContext, Registry
from sx.processors.engine import describe_exception
from sx.protos.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from sx.worker._broadcast import BroadcastMaster
from sx.worker._convert import context_for, execute_mode_of, instance_report, now_ms
from sx.worker._hooks import HookRunner, Resolved, SubmitRefused, resolve
from sx.worker._outcome import Outcome
from sx.worker._peer import PeerClients
from sx.worker._settings import WorkerSettings
from sx.worker.map import (
    FileTaskStore,
    MapMaster,
    MemoryTaskStore,
    ServerTaskStore,
    TaskStore,
    task_file_path,
)

__all__ = ["SHUTDOWN_RESULT", "Instances", "Intervals"]

log = logging.getLogger("sx.worker")

SHUTDOWN_RESULT = "worker shut down"


@dataclass
class Intervals:
    """Seconds between checks a master makes; tests shorten them on a running worker."""

    alive: float = 5.0
    """Between liveness checks of the workers running a broadcast or map instance's tasks."""
    progress: float = 3.0
    """Between the RUNNING reports (with progress) of a map instance."""


@dataclass(eq=False)
class InstanceRun:
    """One instance this worker is the master of."""

    spec: common_pb2.InstanceSpec
    resolved: Resolved
    mode: ExecuteMode
    task: asyncio.Task[None] | None = None
    ctx: JobContext | None = None
    master: BroadcastMaster | MapMaster | None = None
    kill_reason: str | None = None
    suspended: bool = False
    """A batch instance stopped by a shutdown: not reported, so the scheduler resumes it elsewhere."""
    started_ms: int = 0


class Instances:
    """The instances this worker is the master of, by id, from submission to their final report."""

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        registry: Registry,
        worker_id: str,
        hooks: HookRunner,
        peers: PeerClients,
        address: Callable[[], str],
        intervals: Intervals,
        report: Callable[[scheduler_pb2.InstanceReport], None],
        channel: Callable[[], aio.Channel | None],
        draining: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.worker_id = worker_id
        self._hooks = hooks
        self._peers = peers
        self._address = address
        self._intervals = intervals
        self._report = report
        self._channel = channel
        self._draining = draining
        self._runs: dict[int, InstanceRun] = {}

    @property
    def ids(self) -> list[int]:
        """Instances running here, or reporting their end."""
        return list(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def master_of(self, instance_id: int) -> BroadcastMaster | MapMaster | None:
        run = self._runs.get(instance_id)
        return run.master if run is not None else None

    def submit(self, submit: scheduler_pb2.SubmitInstance) -> scheduler_pb2.SubmitReply:
        """Accept an instance and start it in the background, or refuse it with a reason."""
        spec = submit.instance
        instance_id = spec.instance_id
        try:
            if self._draining():
                raise SubmitRefused(f"worker {self.worker_id} is shutting down")
            if instance_id in self._runs:
                raise SubmitRefused(f"instance {instance_id} is still running on worker {self.worker_id}")
            try:
                mode = execute_mode_of(spec)
            except ValueError as exc:
                raise SubmitRefused(str(exc)) from None
            resolved = resolve(self.registry, spec)
            if mode.is_map and (resolved.definition is None or not resolved.definition.kind.is_map):
                raise SubmitRefused(
                    f"execute_mode={mode.value!r} is not supported by processor "
                    f"{spec.processor or spec.job_type!r}: it needs a MapProcessor or MapReduceProcessor"
                )
        except SubmitRefused as exc:
            log.warning("refused instance %s of job %s: %s", instance_id, spec.job_id, exc)
            return scheduler_pb2.SubmitReply(
                instance_id=instance_id, accepted=False, message=str(exc), draining=self._draining()
            )
        run = InstanceRun(spec=spec, resolved=resolved, mode=mode)
        self._runs[instance_id] = run
        run.task = asyncio.create_task(self._traced_run(run), name=f"sx-instance-{instance_id}")
        return scheduler_pb2.SubmitReply(instance_id=instance_id, accepted=True)

    async def kill(self, kill: scheduler_pb2.KillInstance) -> None:
        """Stop an instance this worker is the master of; it then reports FAILED "killed"."""
        run = self._runs.get(kill.instance_id)
        if run is None:
            log.info("kill of instance %s: not running on this worker", kill.instance_id)
            return
        await self._kill(run, f"killed: {kill.reason}" if kill.reason else "killed")

    async def suspend_batches(self) -> None:
        """Hand batch instances back at shutdown: their state is on disk, so they are not waited for."""
        batch = [run for run in self._runs.values() if run.mode is ExecuteMode.BATCH]
        await asyncio.gather(*(self._suspend(run) for run in batch))

    async def kill_all(self, reason: str) -> None:
        await asyncio.gather(*(self._kill(run, reason) for run in list(self._runs.values())))

    def cancel_all(self) -> None:
        """Cancel every instance without waiting (``run`` failed); each still reports its end."""
        for run in list(self._runs.values()):
            if run.task is not None:
                run.kill_reason = run.kill_reason or SHUTDOWN_RESULT
                run.task.cancel()

    @property
    def map_queue_depth(self) -> int:
        """Subtasks queued, not yet sent, in the map instances this worker is the master of."""
        masters = [run.master for run in self._runs.values() if isinstance(run.master, MapMaster)]
        return sum(master.store.pending for master in masters)

    async def _traced_run(self, run: InstanceRun) -> None:
        """``_run_instance`` inside the instance's span, which continues the scheduler's dispatch span.
        Its context replaces the spec's, so the subtasks' spans (StartTasks carries the spec) continue
        it; the final report is sent inside it and carries it too."""
        spec = run.spec
        attributes: dict[str, str | int] = {
            "sx.job_id": spec.job_id,
            "sx.job_name": spec.job_name,
            "sx.instance_id": spec.instance_id,
            "sx.execute_mode": run.mode.value,
            "sx.worker_id": self.worker_id,
        }
        tracing = self._hooks.tracing
        with tracing.span("sx.instance", parent=spec.trace_context, attributes=attributes) as span:
            carrier = span.carrier()
            if carrier:
                spec.trace_context.clear()
                spec.trace_context.update(carrier)
            await self._run_instance(run)

    async def _run_instance(self, run: InstanceRun) -> None:
        spec = run.spec
        started_ms = run.started_ms = now_ms()
        started = time.monotonic()
        log.info(
            "instance %s of job %s (%s, %s) started",
            spec.instance_id,
            spec.job_id,
            spec.job_name,
            run.mode.value,
        )
        self._report(instance_report(spec, InstanceStatus.RUNNING, start_time_ms=started_ms))
        try:
            outcome = await self._execute(run)
        except asyncio.CancelledError:
            outcome = Outcome(InstanceStatus.FAILED, run.kill_reason or "killed")
        except Exception as exc:
            log.exception("instance %s failed in the worker", spec.instance_id)
            outcome = Outcome(InstanceStatus.FAILED, describe_exception(exc))
        if run.suspended:
            # No final report: the scheduler sees this worker gone and submits the instance again.
            log.info("instance %s suspended: worker %s shuts down", spec.instance_id, self.worker_id)
            self._runs.pop(spec.instance_id, None)
            return
        if run.kill_reason is not None:
            outcome = Outcome(InstanceStatus.FAILED, run.kill_reason, outcome.progress)
        self._report(
            instance_report(
                spec,
                outcome.status,
                result=outcome.result,
                progress=outcome.progress,
                start_time_ms=started_ms,
                end_time_ms=now_ms(),
            )
        )
        log.info(
            "instance %s of job %s ended %s in %.3fs: %s",
            spec.instance_id,
            spec.job_id,
            outcome.status.name,
            time.monotonic() - started,
            outcome.result,
        )
        # Nothing of a finished instance stays in memory: its report is owned by the connection now.
        self._runs.pop(spec.instance_id, None)

    async def _execute(self, run: InstanceRun) -> Outcome:
        if run.mode is ExecuteMode.BROADCAST:
            run.master = BroadcastMaster(
                spec=run.spec,
                resolved=run.resolved,
                hooks=self._hooks,
                peers=self._peers,
                worker_id=self.worker_id,
                address=self._address(),
                alive_interval=self._intervals.alive,
            )
            return await run.master.run()
        if run.mode.is_map:
            run.master = self._map_master(run)
            return await run.master.run()
        run.ctx = context_for(
            run.spec, worker_addr=self._address(), codec=run.resolved.codec, loop=asyncio.get_running_loop()
        )
        result = await self._hooks.call(run.resolved, "process", run.ctx)
        return Outcome(result.status, result.result)

    def _map_master(self, run: InstanceRun) -> MapMaster:
        spec = run.spec
        keep_results = run.resolved.has_hook("reduce")
        store: TaskStore
        channel = self._channel()
        if run.mode is ExecuteMode.BATCH:
            path = task_file_path(self.settings.data_dir, spec.instance_id)
            store = FileTaskStore(path, job_id=spec.job_id, keep_results=keep_results)
        elif run.mode is ExecuteMode.PARALLEL and channel is not None:
            # Parallel subtasks are kept by the scheduler: listed and retried through its OpenAPI.
            store = ServerTaskStore(
                stub=scheduler_pb2_grpc.SchedulerStub(channel),
                caller=scheduler_pb2.TaskCaller(
                    namespace=self.settings.namespace,
                    group_id=self.settings.group_id,
                    worker_id=self.worker_id,
                ),
                app_key=self.settings.app_key,
                instance_id=spec.instance_id,
                keep_results=keep_results,
            )
        else:
            store = MemoryTaskStore(keep_results=keep_results)

        def report_progress(progress: str) -> None:
            self._report(
                instance_report(spec, InstanceStatus.RUNNING, progress=progress, start_time_ms=run.started_ms)
            )

        return MapMaster(
            spec=spec,
            resolved=run.resolved,
            hooks=self._hooks,
            peers=self._peers,
            worker_id=self.worker_id,
            address=self._address(),
            store=store,
            report_progress=report_progress,
            alive_interval=self._intervals.alive,
            progress_interval=self._intervals.progress,
        )

    async def _suspend(self, run: InstanceRun) -> None:
        if run.kill_reason is not None or run.task is None or run.task.done():
            return
        run.kill_reason = SHUTDOWN_RESULT
        run.suspended = True
        log.info(
            "suspending batch instance %s: its task file stays for the next master",
            run.spec.instance_id,
        )
        if isinstance(run.master, MapMaster):
            await run.master.suspend(SHUTDOWN_RESULT)
        if not run.task.done():
            run.task.cancel()

    async def _kill(self, run: InstanceRun, reason: str) -> None:
        if run.kill_reason is not None or run.task is None or run.task.done():
            return
        run.kill_reason = reason
        log.info("killing instance %s: %s", run.spec.instance_id, reason)
        if run.master is not None:
            await run.master.kill(reason)
        elif run.ctx is not None:
            await self._hooks.call_kill(run.resolved, run.ctx)
        if not run.task.done():
            run.task.cancel()
