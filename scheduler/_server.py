"""A whole scheduler in one object: store, OpenAPI over HTTP, worker protocol over gRPC, triggers.

``sx-worker serve`` runs one alone; ``sx-worker run`` with no server address runs one inside the worker
process. Either way workers reach it only through its gRPC and HTTP ports, so the embedded and the
distributed set-ups are one code path.

This is the composition root, the only module that knows every part. It builds them lowest first,
giving each what it needs in its constructor: the services get ``Hooks`` made of the trigger engine's
and the dispatcher's methods; every part that finishes an instance feeds one ``InstanceEvents``, to
which the lifecycle and the workflow engine subscribe. Then it starts and stops them in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta, tzinfo
from types import TracebackType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sx.processors import SxError
from sx.protos import server_options, tracing_for
from sx.scheduler._clock import Clock, RealClock
from sx.scheduler._health import GRPC_SERVICES, Readiness
from sx.scheduler._metrics import SchedulerMetrics
from sx.scheduler._settings import SchedulerSettings, is_loopback
from sx.scheduler._shutdown import bounded_step
from sx.scheduler.api import AccessKeys, Authenticator, Operations, Services, create_app
from sx.scheduler.console import create_console
from sx.scheduler.dispatch import Dispatcher, InstanceTracing, server_credentials
from sx.scheduler.jobs import (
    AdminService,
    AlarmChannel,
    AlarmHistory,
    AlarmRouter,
    AppriseChannel,
    BackfillDriver,
    BackfillService,
    Hooks,
    InstanceEvents,
    InstanceLogs,
    JobService,
    Lifecycle,
    LogChannel,
    SmsChannel,
    TaskService,
    TriggerEngine,
    WebhookChannel,
    hand_over_each,
)
from sx.scheduler.store import InUseError, Store
from sx.scheduler.store.sql import SqlStore, sqlite_url
from sx.scheduler.workflows import WorkflowEngine, WorkflowFireLoop, WorkflowService

__all__ = ["SchedulerServer", "SchedulerStartError", "alarm_channels", "local_zone"]

log = logging.getLogger("sx.scheduler")

# Per part of the stop sequence: when its stacks are logged, and when it is left behind.
_STOP_WARN_AFTER = 10.0
_STOP_GIVE_UP_AFTER = 25.0
_HTTP_GRACE_SECONDS = 5


class SchedulerStartError(SxError):
    """The scheduler cannot start as configured (e.g. it would listen remotely without access keys, or
    another scheduler holds its SQLite file)."""


def local_zone() -> tzinfo:
    """The host's IANA zone (so daylight-saving rules apply), UTC when it cannot be told."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = os.readlink("/etc/localtime")
        candidates.append(target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "")
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def alarm_channels(settings: SchedulerSettings) -> dict[str, AlarmChannel]:
    """The channels a job's sendChannel can name; sms without a gateway is logged, so nothing is lost."""
    channels: dict[str, AlarmChannel] = {"log": LogChannel()}
    if settings.alarm_webhook_url:
        channels["webhook"] = WebhookChannel(settings.alarm_webhook_url)
    channels["sms"] = SmsChannel(settings.sms_gateway_url) if settings.sms_gateway_url else LogChannel()
    # Without apprise installed these two fail each alarm with what to install (it is imported lazily).
    channels["apprise"] = AppriseChannel(settings.alarm_apprise_url)
    channels["ding"] = AppriseChannel(ding_only=True)
    return channels


class SchedulerServer:
    """Start with ``async with SchedulerServer(settings) as server:``; ports 0 pick free ones."""

    def __init__(self, settings: SchedulerSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or RealClock()
        zone_name = settings.default_time_zone
        self.default_tz: tzinfo = ZoneInfo(zone_name) if zone_name else local_zone()
        url = settings.database_url or sqlite_url(settings.data_dir)
        # Exclusive: on SQLite a second scheduler on the same file is refused at start.
        self.metrics = SchedulerMetrics()
        """This scheduler's Prometheus metrics (served at ``/metrics``), on a registry of its own."""
        sql_store = SqlStore(url, exclusive=True, observe=self.metrics.store_operation)
        self.store: Store = sql_store
        clock, store, tz = self.clock, self.store, self.default_tz
        self.events = InstanceEvents()
        self.alarms = AlarmRouter(alarm_channels(settings), store)
        self.tracing = InstanceTracing(tracing_for(settings.tracing, component="sx.scheduler"))
        self.dispatcher = Dispatcher(
            store,
            clock=clock,
            on_finished=self.events.finished,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            no_worker_grace=settings.no_worker_grace,
            batch_resume_wait=settings.batch_resume_wait,
            lease_seconds=settings.lease_seconds,
            instance_log_lines=settings.instance_log_lines,
            tracing=self.tracing,
        )
        self.metrics.watch_dispatch(self.dispatcher.queue_depth, self.dispatcher.workers_per_group)
        self.events.on_finished(self.metrics.finished)
        self.events.on_finished(self.tracing.finished)
        hand_over = self.tracing.tracing_created(
            self.metrics.counting_created(self.dispatcher.instance_created)
        )
        stop_instance = self.dispatcher.stop_instance
        self.engine = TriggerEngine(
            store,
            clock=clock,
            default_tz=tz,
            on_created=self.metrics.counting_fires(hand_over_each(hand_over)),
            # Workers that were connected come back within one heartbeat timeout, or are lost.
            recovery=settings.heartbeat_timeout,
            on_misfire=self.metrics.missed,
            group_recovering=self._group_recovering,
        )
        self.lifecycle = Lifecycle(
            store,
            clock=clock,
            default_tz=tz,
            engine=self.engine,
            alarms=self.alarms,
            on_created=hand_over_each(hand_over),
            stop_instance=stop_instance,
            history_keep=settings.history_keep,
            events=self.events,
            watches_group=lambda namespace, group_id: self.dispatcher.ownership.owns((namespace, group_id)),
        )
        hooks = Hooks(wake_triggers=self.engine.wake, instance_created=hand_over, stop_instance=stop_instance)
        self.service = JobService(
            store,
            clock=clock,
            default_tz=tz,
            hooks=hooks,
            events=self.events,
            history_keep=settings.history_keep,
        )
        self.admin = AdminService(store, wake_triggers=self.engine.wake)
        self.tasks = TaskService(store, jobs=self.service, hand_over=hand_over)
        self.workflow_engine = WorkflowEngine(
            store, clock=clock, events=self.events, hand_over=hand_over, stop_instance=stop_instance
        )
        # Backfill instances reach dispatch through the same hook as every other creator's.
        self.backfill_driver = BackfillDriver(
            store, clock=clock, hand_over=hooks.instance_created, start_workflow=self.workflow_engine.advance
        )
        self.events.on_ended(self.backfill_driver.on_ended)
        self.backfills = BackfillService(store, jobs=self.service, wake_driver=self.backfill_driver.wake)
        self.workflow_fires = WorkflowFireLoop(store, clock=clock, engine=self.workflow_engine, default_tz=tz)
        self.workflows = WorkflowService(
            store,
            clock=clock,
            default_tz=tz,
            jobs=self.service,
            engine=self.workflow_engine,
            wake_fire_loop=self.workflow_fires.wake,
        )
        self.services = Services(
            jobs=self.service,
            admin=self.admin,
            tasks=self.tasks,
            access_keys=AccessKeys(store),
            workflows=self.workflows,
            alarms=AlarmHistory(store),
            workers=self.dispatcher,
            backfills=self.backfills,
            logs=InstanceLogs(store, jobs=self.service, clock=clock),
        )
        """What the OpenAPI serves (``create_app(server.services)``)."""
        self.auth = Authenticator(store, clock=clock)
        self.readiness = Readiness(
            ping=store.ping,
            loops={
                "trigger engine": lambda: self.engine.running,
                "dispatcher": lambda: self.dispatcher.running,
            },
        )
        self._grpc: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.http_url = ""
        self.grpc_address = ""

    async def start(self) -> None:
        """Start every part; if one fails, the parts already started are stopped before raising."""
        try:
            await self._start_parts()
        except BaseException:
            try:
                await self.stop()
            except Exception:
                log.exception("stopping after a failed start failed too")
            raise

    async def _start_parts(self) -> None:
        settings = self.settings
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self.store.start()
        except InUseError as exc:
            raise SchedulerStartError(str(exc)) from exc
        await self._check_exposure()
        await self._start_grpc()
        await self._start_http()
        await self.dispatcher.start(grpc_address=self.advertised_grpc_address(), http_url=self.http_url)
        await self.engine.start()
        await self.workflow_fires.start()
        await self.lifecycle.start()
        await self.backfill_driver.start()
        assert self._health is not None
        await self.readiness.start(self._health)
        log.info("scheduler ready: OpenAPI %s, gRPC %s", self.http_url, self.grpc_address)

    def _group_recovering(self, namespace: str, group_id: str) -> bool:
        # Its workers come back to a new owner within one heartbeat timeout, or are lost.
        window = timedelta(seconds=self.settings.heartbeat_timeout)
        return self.dispatcher.ownership.recovering((namespace, group_id), window)

    def advertised_grpc_address(self) -> str:
        """Where workers reach this scheduler's gRPC port (the other replicas send them here)."""
        if self.settings.grpc_advertise_address:
            return self.settings.grpc_advertise_address
        host, _, port = self.grpc_address.rpartition(":")
        if host in ("0.0.0.0", "[::]", "::", ""):
            host = socket.getfqdn()
        return f"{host}:{port}"

    async def _check_exposure(self) -> None:
        remote = [h for h in (self.settings.http_host, self.settings.grpc_host) if not is_loopback(h)]
        if await self.store.has_access_keys():
            return
        if not remote:
            log.info("no access key exists: the OpenAPI accepts unsigned requests (on loopback only)")
            return
        if not self.settings.allow_remote_unsigned:
            raise SchedulerStartError(
                f"refusing to listen on {', '.join(remote)}: no access key exists, so anyone could use the "
                "OpenAPI. Create one with `sx-worker keys create --namespace NS`, or pass "
                "--allow-remote-unsigned to accept unsigned requests from the network."
            )
        log.warning("listening on %s WITHOUT access keys: the OpenAPI accepts unsigned requests", remote)

    async def _start_grpc(self) -> None:
        # gRPC's default SO_REUSEPORT would let this bind a port another scheduler holds, and workers
        # would be split between the two: a taken port must be an error.
        server = grpc.aio.server(options=[*server_options(), ("grpc.so_reuseport", 0)])
        self.dispatcher.add_to_server(server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        # Serving once every part runs: the readiness watcher says so at the end of start().
        for service in GRPC_SERVICES:
            await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._health = health_servicer
        host = self.settings.grpc_host
        target = f"{host}:{self.settings.grpc_port}"
        creds = None
        if self.settings.tls_cert and self.settings.tls_key:
            creds = server_credentials(
                cert=self.settings.tls_cert.read_bytes(),
                key=self.settings.tls_key.read_bytes(),
                client_ca=self.settings.tls_client_ca.read_bytes() if self.settings.tls_client_ca else None,
            )
        try:
            port = server.add_secure_port(target, creds) if creds else server.add_insecure_port(target)
        except RuntimeError as exc:  # grpc says only "Failed to bind"
            raise SchedulerStartError(
                f"cannot listen for gRPC on {target}: the address is taken or not this host's "
                "(grpc_port / SX_GRPC_PORT)"
            ) from exc
        await server.start()
        self._grpc = server
        self.grpc_address = f"{host}:{port}"

    async def _start_http(self) -> None:
        ops = Operations(
            not_ready=self.readiness.not_ready,
            exposition=self.metrics.exposition,
            observe_request=self.metrics.request,
        )
        app = create_app(self.services, auth=self.auth, ops=ops)
        # The web console beside the OpenAPI, on the same port and over the same services.
        app.mount("/console", create_console(self.services))
        # Bound here so a taken port fails start() at once. IPPROTO_TCP matters: asyncio sets TCP_NODELAY
        # only on sockets that say so, and without it every response waits ~40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in self.settings.http_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.settings.http_host, self.settings.http_port))
        except OSError as exc:
            sock.close()
            raise SchedulerStartError(
                f"cannot listen for the OpenAPI on {self.settings.http_host}:{self.settings.http_port}: "
                f"{exc.strerror or exc} (http_port / SX_HTTP_PORT)"
            ) from exc
        except BaseException:
            sock.close()
            raise
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.tracing.tracing.traced_asgi(app),
            log_level="warning",
            access_log=False,
            lifespan="off",
            # Requests still open when stopping (a log follower's long poll) get this long, then end.
            timeout_graceful_shutdown=_HTTP_GRACE_SECONDS,
        )
        server = uvicorn.Server(config)
        self._http = server
        self._http_task = asyncio.create_task(server.serve(sockets=[sock]), name="sx-openapi")
        while not server.started:
            if self._http_task.done():
                await self._http_task
                raise SchedulerStartError("the OpenAPI server stopped while starting")
            await asyncio.sleep(0.01)
        host = self.settings.http_host
        shown = f"[{host}]" if ":" in host else host
        self.http_url = f"http://{shown}:{port}"

    async def stop(self) -> None:
        """Stop what runs; parts that never started (after a failed start) are skipped.

        Each part gets a bounded time (see _shutdown): one that hangs is logged with every task's
        stack and left behind, so the dispatcher still stops and gives its groups up."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("the readiness watch", self.readiness.stop),
            # Probes see the scheduler going away before its streams end.
            ("the gRPC health service", self._leave_health),
            ("the backfill driver", self.backfill_driver.stop),
            ("the lifecycle", self.lifecycle.stop),
            ("the workflow fire loop", self.workflow_fires.stop),
            ("the trigger engine", self.engine.stop),
            ("the dispatcher", self.dispatcher.stop),
            ("the OpenAPI server", self._stop_http),
        ]
        for name, stop in steps:
            await bounded_step(
                name, stop(), logger=log, warn_after=_STOP_WARN_AFTER, give_up_after=_STOP_GIVE_UP_AFTER
            )
        if self._grpc is not None:
            await self._grpc.stop(grace=2.0)
            self._grpc = None
            self._health = None
        await self.store.close()

    async def _leave_health(self) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    async def _stop_http(self) -> None:
        http, task = self._http, self._http_task
        self._http = self._http_task = None
        if http is not None and task is not None:
            http.should_exit = True
            try:
                await task
            except Exception:
                log.exception("the OpenAPI server ended with an error")

    async def __aenter__(self) -> SchedulerServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
