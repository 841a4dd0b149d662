"""``Worker``: the lifecycle of a worker process: start its servers and scheduler connection, serve,
drain, stop.

The worker's composition root: it builds the runtime parts (hooks, peers, its servers, the connection),
the map engine's ``TaskRunner``, and ``Instances`` (``_instances``: the instances this worker is the
master of, with their broadcast or map masters), and wires them to ``MessageHandler`` (``_messages``:
what the worker answers the scheduler and its peers, and its instances' reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from sx.processors import Registry, default_registry
from sx.protos import channel_credentials, tracing_for
from sx.worker._connection import SchedulerConnection, WorkerRejected
from sx.worker._hooks import HookRunner
from sx.worker._instances import SHUTDOWN_RESULT, Instances, Intervals
from sx.worker._log_shipper import LogShipper
from sx.worker._messages import MessageHandler
from sx.worker._metrics import WorkerMetrics, WorkerState
from sx.worker._peer import PeerClients, PeerService
from sx.worker._servers import WorkerServers
from sx.worker._settings import WorkerSettings, default_worker_id
from sx.worker.map import TaskRunner

log = logging.getLogger("sx.worker")

__all__ = ["Worker", "WorkerRejected"]

REPORT_DRAIN_TIMEOUT = 5.0
"""Seconds shutdown waits for the scheduler to acknowledge the last reports."""


class Worker:
    """A worker process's runtime: serve peers, stay registered with the scheduler, run instances.

    ``await run()`` serves until ``await shutdown()``; ``async with Worker(...)`` does both around a block.
    The library installs no signal handlers: the CLI calls ``shutdown`` on SIGTERM.
    """

    def __init__(self, settings: WorkerSettings, *, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else default_registry()
        self.worker_id = settings.worker_id or default_worker_id()
        self._intervals = Intervals()
        self._connected = asyncio.Event()
        self._address = ""
        self._instances: Instances | None = None
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._ready = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._connection: SchedulerConnection | None = None
        self._hooks: HookRunner | None = None
        self._tasks: TaskRunner | None = None
        self._peers = PeerClients(local_address=lambda: self._address, app_key=settings.app_key)
        self._logs = LogShipper(lambda: self._connection, capacity=settings.log_buffer_lines)
        self.metrics = WorkerMetrics()
        """This worker's Prometheus metrics (served on ``metrics_port``), on a registry of its own."""
        self.tracing = tracing_for(settings.tracing, component="sx.worker")
        self._servers = WorkerServers(settings)
        self._messages = MessageHandler(
            settings=settings,
            registry=self.registry,
            worker_id=self.worker_id,
            address=lambda: self._address,
            draining=lambda: self._stopping,
            logs=self._logs,
            metrics=self.metrics,
            tracing=self.tracing,
            tasks=lambda: self._tasks,
            instances=lambda: self._instances,
            connection=lambda: self._connection,
        )

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
        return self._instances.ids if self._instances is not None else []

    @property
    def alive_interval(self) -> float:
        """Seconds between liveness checks of the workers running a broadcast or map instance's tasks."""
        return self._intervals.alive

    @alive_interval.setter
    def alive_interval(self, seconds: float) -> None:
        self._intervals.alive = seconds

    @property
    def progress_interval(self) -> float:
        """Seconds between the RUNNING reports (with progress) of a map instance."""
        return self._intervals.progress

    @progress_interval.setter
    def progress_interval(self, seconds: float) -> None:
        self._intervals.progress = seconds

    @property
    def running_task_instance_ids(self) -> list[int]:
        """Instances with tasks on this worker (started by a master, maybe this one)."""
        return self._tasks.instance_ids if self._tasks is not None else []

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port`` of ``/metrics`` and ``/health/*`` once started; None while off."""
        return self._servers.metrics_url

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
            concurrency=self.settings.concurrency,
            thread_pool_size=self.settings.effective_thread_pool_size,
            log_sink=self._logs,
            metrics=self.metrics,
            tracing=self.tracing,
        )
        self._tasks = TaskRunner(
            hooks=self._hooks,
            registry=self.registry,
            peers=self._peers,
            worker_id=self.worker_id,
            address=lambda: self._address,
            master_check_interval=self.alive_interval,
        )
        self._instances = Instances(
            settings=self.settings,
            registry=self.registry,
            worker_id=self.worker_id,
            hooks=self._hooks,
            peers=self._peers,
            address=lambda: self._address,
            intervals=self._intervals,
            report=self._messages.report,
            channel=lambda: self._connection.channel if self._connection is not None else None,
            draining=lambda: self._stopping,
        )
        try:
            await self._start_server()
            await self._start_metrics_server()
            self._connection = SchedulerConnection(
                addresses=self.settings.server_addresses,
                handler=self._messages,
                app_key=self.settings.app_key,
                credentials=credentials,
                connected=self._connected,
                unsent_logs=self._logs.drain,
            )
            log.info(
                "worker %s serving peers on %s, scheduler %s, concurrency %d, processors: %s",
                self.worker_id,
                self._address,
                self.settings.server,
                self.settings.concurrency,
                ", ".join(self.registry.names) or "(none)",
            )
            self._logs.start()
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
        """Start ``run`` in a task; returns once the worker registered or a first round over the scheduler
        addresses failed (raising if registration was refused).

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
        assert self._tasks is not None
        service = PeerService(tasks=self._tasks, masters=self._messages.master_of, worker_id=self.worker_id)
        port = await self._servers.start_peer(service, address=lambda: self._address)
        self._address = f"{self.settings.advertise_host}:{port}"
        self._peers.bind_local(service)

    async def _shutdown(self, grace: float) -> None:
        self._stopping = True
        if not self._started or self._tasks is None or self._instances is None:
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
        await self._servers.enter_graceful_shutdown()
        await self._instances.suspend_batches()
        await self._wait_instances(grace)
        if self._instances:
            await self._instances.kill_all(SHUTDOWN_RESULT)
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
            await self._logs.close()  # the last lines go out before Deregister
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
        if self._instances is not None:
            self._instances.cancel_all()
        if self._tasks is not None:
            await self._tasks.close(reason=SHUTDOWN_RESULT)
        await self._logs.close()
        if self._connection is not None:
            await self._connection.close(reason="worker stopped")
        await self._close_resources()
        self._stopped.set()

    async def _close_resources(self) -> None:
        await self._servers.close()
        await self._peers.close()
        if self._hooks is not None:
            self._hooks.close()

    # -- metrics and health ------------------------------------------------------------------------

    async def _start_metrics_server(self) -> None:
        if self.settings.metrics_port == 0:
            return

        def connection() -> SchedulerConnection | None:
            return self._connection

        def reconnects() -> int:
            connection = self._connection
            return max(0, connection.connects - 1) if connection is not None else 0

        self.metrics.watch(
            WorkerState(
                instances_running=lambda: len(self._instances) if self._instances is not None else 0,
                map_queue_depth=lambda: self._instances.map_queue_depth if self._instances is not None else 0,
                report_backlog=lambda: c.unacked if (c := connection()) is not None else 0,
                connected=self._connected.is_set,
                reconnects=reconnects,
                log_lines_dropped=lambda: self._logs.dropped_total,
            )
        )
        await self._servers.start_metrics(
            exposition=self.metrics.exposition, draining=lambda: self._stopping, connected=self._connected
        )
        log.info("worker %s serving metrics and health on %s", self.worker_id, self.metrics_url)
