"""``Worker``: the peer server, the scheduler connection and the instances running on this worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from sx.processors._context import JobContext
from sx.processors._enums import ExecuteMode, InstanceStatus
from sx.processors._invoke import describe_exception
from sx.processors._registry import Registry, default_registry
from sx.protos._options import channel_credentials, server_options
from sx.protos.v1 import common_pb2, peer_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from sx.worker._broadcast import BroadcastMaster, Outcome
from sx.worker._connection import SchedulerConnection, WorkerRejected
from sx.worker._convert import context_for, execute_mode_of, instance_report, now_ms
from sx.worker._peer import PeerAuthInterceptor, PeerClients, PeerService, StatusReceiver
from sx.worker._runner import HookRunner, Resolved, SubmitRefused, TaskRunner, resolve
from sx.worker._settings import WorkerSettings, default_worker_id
from sx.worker.map._master import MapMaster
from sx.worker.map._server_store import ServerTaskStore
from sx.worker.map._store import FileTaskStore, MemoryTaskStore, TaskStore, task_file_path

log = logging.getLogger("sx.worker")

__all__ = ["Worker", "WorkerRejected"]

SHUTDOWN_RESULT = "worker shut down"
REPORT_DRAIN_TIMEOUT = 5.0
"""Seconds shutdown waits for the scheduler to acknowledge the last reports."""


@dataclass(eq=False)
class _InstanceRun:
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


class Worker:
    """A worker process's runtime: serve peers, stay registered with the scheduler, run instances.

    ``await run()`` serves until ``await shutdown()``; ``async with Worker(...)`` does both around a block.
    The library installs no signal handlers: the CLI calls ``shutdown`` on SIGTERM.
    """

    def __init__(self, settings: WorkerSettings, *, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else default_registry()
        self.worker_id = settings.worker_id or default_worker_id()
        self.alive_interval = 5.0
        """Seconds between liveness checks of the workers running a broadcast or map instance's tasks."""
        self.progress_interval = 3.0
        """Seconds between the RUNNING reports (with progress) of a map instance."""
        self._connected = asyncio.Event()
        self._address = ""
        self._instances: dict[int, _InstanceRun] = {}
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._ready = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._server: aio.Server | None = None
        self._health: HealthServicer | None = None
        self._connection: SchedulerConnection | None = None
        self._hooks: HookRunner | None = None
        self._tasks: TaskRunner | None = None
        self._peers = PeerClients(local_address=lambda: self._address, app_key=settings.app_key)

    # -- public state ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` where peers reach this worker; empty until ``run`` started the peer server."""
        return self._address

    @property
    def connected(self) -> asyncio.Event:
        """Set while the worker is registered with the scheduler."""
        return self._connected

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    @property
    def running_instance_ids(self) -> list[int]:
        """Instances this worker is the master of (running, or reporting their end)."""
        return list(self._instances)

    @property
    def running_task_instance_ids(self) -> list[int]:
        """Instances with tasks on this worker (started by a master, maybe this one)."""
        return self._tasks.instance_ids if self._tasks is not None else []

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the peer server, connect to the scheduler and serve until ``shutdown``.

        Raises ``WorkerRejected`` when the scheduler refuses the registration, and ValueError when
        ``settings.server`` is not set.
        """
        if self._started:
            raise RuntimeError("Worker.run() was already called; create a new Worker")
        self._started = True
        if self._stopping:  # shut down before it ever ran
            return
        if self.settings.server is None:
            raise ValueError("server=None: set the scheduler's host:port (the CLI starts an embedded one)")
        credentials = channel_credentials(
            tls_ca=self.settings.tls_ca, tls_cert=self.settings.tls_cert, tls_key=self.settings.tls_key
        )
        self._hooks = HookRunner(
            concurrency=self.settings.concurrency, thread_pool_size=self.settings.effective_thread_pool_size
        )
        self._tasks = TaskRunner(
            hooks=self._hooks,
            registry=self.registry,
            peers=self._peers,
            worker_id=self.worker_id,
            address=lambda: self._address,
            master_check_interval=self.alive_interval,
        )
        try:
            await self._start_server()
            self._connection = SchedulerConnection(
                target=self.settings.server, handler=self, credentials=credentials, connected=self._connected
            )
            log.info(
                "worker %s serving peers on %s, scheduler %s, concurrency %d, processors: %s",
                self.worker_id,
                self._address,
                self.settings.server,
                self.settings.concurrency,
                ", ".join(self.registry.names) or "(none)",
            )
            self._ready.set()
            if not self._stopping:
                await self._connection.run()
        except BaseException:
            self._stopping = True
            await self._abort()
            raise
        await self._stopped.wait()

    async def shutdown(self, *, grace: float | None = None) -> None:
        """Stop taking work, let running instances finish within ``grace`` seconds, report, deregister.

        Instances still running after the grace period are cancelled and reported FAILED "worker shut
        down". Batch instances are not waited for: their masters stop at once, keep their task files
        and report nothing, so the scheduler submits them again and a master on this host resumes them.
        Idempotent: later calls wait for the first one. ``grace`` defaults to ``settings.shutdown_grace``.
        """
        if self._shutdown_task is None:
            chosen = self.settings.shutdown_grace if grace is None else grace
            self._shutdown_task = asyncio.create_task(self._shutdown(chosen), name="sx-worker-shutdown")
        await asyncio.shield(self._shutdown_task)

    async def __aenter__(self) -> Worker:
        """Start ``run`` in a task; returns after the first registration attempt (raising if it was refused).

        A scheduler that cannot be reached does not block the entry: the worker keeps retrying in the
        background, and ``connected`` is set once it registers.
        """
        self._run_task = asyncio.create_task(self.run(), name="sx-worker-run")
        ready = asyncio.create_task(self._wait_ready())
        done, _ = await asyncio.wait({self._run_task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if self._run_task in done:
            ready.cancel()
            self._run_task.result()
        return self

    async def _wait_ready(self) -> None:
        await self._ready.wait()
        assert self._connection is not None
        await self._connection.attempted.wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.shutdown()
        if self._run_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task

    async def _start_server(self) -> None:
        server = aio.server(
            options=server_options(), interceptors=[PeerAuthInterceptor(app_key=self.settings.app_key)]
        )
        assert self._tasks is not None
        service = PeerService(tasks=self._tasks, masters=self._master_of, worker_id=self.worker_id)
        peer_pb2_grpc.add_PeerServicer_to_server(service, server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_insecure_port(f"{self.settings.peer_host}:{self.settings.peer_port}")
        if port == 0:
            raise OSError(f"peer_port={self.settings.peer_port}: cannot listen on {self.settings.peer_host}")
        await server.start()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        await health.set("sx.v1.Peer", health_pb2.HealthCheckResponse.SERVING)
        self._server, self._health = server, health
        self._address = f"{self.settings.advertise_host}:{port}"
        self._peers.bind_local(service)

    def _master_of(self, instance_id: int) -> StatusReceiver | None:
        run = self._instances.get(instance_id)
        return run.master if run is not None else None

    async def _shutdown(self, grace: float) -> None:
        self._stopping = True
        if not self._started or self._hooks is None or self._tasks is None:
            self._stopped.set()
            return
        log.info(
            "worker %s shutting down (grace %.1fs, %d instance(s) running)",
            self.worker_id,
            grace,
            len(self._instances),
        )
        self._tasks.accepting = False
        if self._connection is not None:
            self._connection.send_heartbeat()  # says "draining" now, not one interval later
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        # A batch instance's state is on disk: it is handed back to the scheduler, not waited for.
        batch = [run for run in self._instances.values() if run.mode is ExecuteMode.BATCH]
        await asyncio.gather(*(self._suspend(run) for run in batch))
        await self._wait_instances(grace)
        if self._instances:
            await asyncio.gather(
                *(self._kill(run, SHUTDOWN_RESULT) for run in list(self._instances.values()))
            )
            await self._wait_instances(5.0)
        await self._tasks.close(reason=SHUTDOWN_RESULT)
        if self._connection is not None:
            if self._connection.unacked:
                # Unacknowledged reports are re-sent on a reconnect, so this also covers a stream that
                # broke just before shutdown.
                await self._connection.wait_acked(REPORT_DRAIN_TIMEOUT)
            if self._connection.unacked:
                log.warning(
                    "worker %s: %d report(s) never acknowledged", self.worker_id, self._connection.unacked
                )
            await self._connection.close(reason="shutdown")
        await self._close_resources()
        log.info("worker %s stopped", self.worker_id)
        self._stopped.set()

    async def _wait_instances(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if not self._instances and (self._tasks is None or not self._tasks.running):
                return
            await asyncio.sleep(0.02)

    async def _abort(self) -> None:
        """Clean up after ``run`` failed (or was cancelled): stop everything without waiting for work."""
        for run in list(self._instances.values()):
            if run.task is not None:
                run.kill_reason = run.kill_reason or SHUTDOWN_RESULT
                run.task.cancel()
        if self._tasks is not None:
            await self._tasks.close(reason=SHUTDOWN_RESULT)
        if self._connection is not None:
            await self._connection.close(reason="worker stopped")
        await self._close_resources()
        self._stopped.set()

    async def _close_resources(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None
        await self._peers.close()
        if self._hooks is not None:
            self._hooks.close()

    # -- the connection's handler ------------------------------------------------------------------

    def register_message(self) -> scheduler_pb2.Register:
        """The Register sent on every (re)connect."""
        return scheduler_pb2.Register(
            namespace=self.settings.namespace,
            group_id=self.settings.group_id,
            app_key=self.settings.app_key,
            worker_id=self.worker_id,
            address=self._address,
            labels=self.settings.labels,
            processors=self.registry.names,
            capacity=self.settings.concurrency,
            version=_version(),
            running_instance_ids=list(self._instances),
        )

    def heartbeat_message(self) -> scheduler_pb2.Heartbeat:
        """This worker's load, sent every heartbeat interval."""
        running = len(self._instances) + (self._tasks.running if self._tasks is not None else 0)
        return scheduler_pb2.Heartbeat(
            running=running,
            capacity=self.settings.concurrency,
            cpu_load1=_load1(),
            rss_bytes=_rss_bytes(),
            running_instance_ids=list(self._instances),
            draining=self._stopping,
        )

    def on_submit(self, submit: scheduler_pb2.SubmitInstance) -> scheduler_pb2.SubmitReply:
        """Accept an instance and start it in the background, or refuse it with a reason."""
        spec = submit.instance
        instance_id = spec.instance_id
        try:
            if self._stopping:
                raise SubmitRefused(f"worker {self.worker_id} is shutting down")
            if instance_id in self._instances:
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
                instance_id=instance_id, accepted=False, message=str(exc), draining=self._stopping
            )
        run = _InstanceRun(spec=spec, resolved=resolved, mode=mode)
        self._instances[instance_id] = run
        run.task = asyncio.create_task(self._run_instance(run), name=f"sx-instance-{instance_id}")
        return scheduler_pb2.SubmitReply(instance_id=instance_id, accepted=True)

    async def on_kill(self, kill: scheduler_pb2.KillInstance) -> None:
        """Stop an instance this worker is the master of; it then reports FAILED "killed"."""
        run = self._instances.get(kill.instance_id)
        if run is None:
            log.info("kill of instance %s: not running on this worker", kill.instance_id)
            return
        await self._kill(run, f"killed: {kill.reason}" if kill.reason else "killed")

    # -- running instances -------------------------------------------------------------------------

    def _report(self, report: scheduler_pb2.InstanceReport) -> None:
        if self._connection is not None:
            self._connection.report(report)

    async def _run_instance(self, run: _InstanceRun) -> None:
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
            self._instances.pop(spec.instance_id, None)
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
        self._instances.pop(spec.instance_id, None)

    async def _execute(self, run: _InstanceRun) -> Outcome:
        assert self._hooks is not None
        if run.mode is ExecuteMode.BROADCAST:
            run.master = BroadcastMaster(
                spec=run.spec,
                resolved=run.resolved,
                hooks=self._hooks,
                peers=self._peers,
                worker_id=self.worker_id,
                address=self._address,
                alive_interval=self.alive_interval,
            )
            return await run.master.run()
        if run.mode.is_map:
            run.master = self._map_master(run)
            return await run.master.run()
        run.ctx = context_for(
            run.spec, worker_addr=self._address, codec=run.resolved.codec, loop=asyncio.get_running_loop()
        )
        result = await self._hooks.call(run.resolved, "process", run.ctx)
        return Outcome(result.status, result.result)

    def _map_master(self, run: _InstanceRun) -> MapMaster:
        assert self._hooks is not None
        spec = run.spec
        keep_results = run.resolved.has_hook("reduce")
        store: TaskStore
        channel = self._connection.channel if self._connection is not None else None
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
            address=self._address,
            store=store,
            report_progress=report_progress,
            alive_interval=self.alive_interval,
            progress_interval=self.progress_interval,
        )

    async def _suspend(self, run: _InstanceRun) -> None:
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

    async def _kill(self, run: _InstanceRun, reason: str) -> None:
        if run.kill_reason is not None or run.task is None or run.task.done():
            return
        run.kill_reason = reason
        assert self._hooks is not None
        log.info("killing instance %s: %s", run.spec.instance_id, reason)
        if run.master is not None:
            await run.master.kill(reason)
        elif run.ctx is not None:
            await self._hooks.call_kill(run.resolved, run.ctx)
        if not run.task.done():
            run.task.cancel()


def _version() -> str:
    try:
        return metadata.version("sx-worker")
    except metadata.PackageNotFoundError:
        return "0"


def _load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
