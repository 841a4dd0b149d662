"""A whole scheduler in one object: store, OpenAPI over HTTP, worker protocol over gRPC, triggers.

``sx-worker serve`` runs one alone; ``sx-worker run`` with no server address runs one inside the worker
process. Either way workers reach it only through its gRPC and HTTP ports, so the embedded and the
distributed set-ups are one code path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import tzinfo
from types import TracebackType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sx.processors._errors import SxError
from sx.protos._options import server_options
from sx.scheduler._clock import Clock, RealClock
from sx.scheduler._settings import SchedulerSettings, is_loopback
from sx.scheduler.api._auth import Authenticator
from sx.scheduler.dispatch._dispatcher import Dispatcher, server_credentials
from sx.scheduler.jobs._alarms import AlarmChannel, AlarmRouter, LogChannel, SmsChannel, WebhookChannel
from sx.scheduler.jobs._lifecycle import Lifecycle
from sx.scheduler.jobs._service import JobService
from sx.scheduler.jobs._triggers import TriggerEngine
from sx.scheduler.store._store import Instance, Store
from sx.scheduler.store.sql._store import SqlStore, sqlite_url
from sx.scheduler.workflows._engine import WorkflowEngine

log = logging.getLogger("sx.scheduler")


class SchedulerStartError(SxError):
    """The scheduler cannot start as configured (e.g. it would listen remotely without access keys)."""


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
    return channels


class _Hooks:
    """Connects the service layer to the trigger engine and the dispatcher."""

    def __init__(self, server: SchedulerServer) -> None:
        self._server = server

    def wake_triggers(self) -> None:
        self._server.engine.wake()

    async def instance_created(self, instance: Instance) -> None:
        await self._server.dispatcher.instance_created(instance)

    async def stop_instance(self, instance: Instance, reason: str) -> bool:
        return await self._server.dispatcher.stop_instance(instance, reason)

    async def instance_finished(self, instance: Instance) -> None:
        await self._server.lifecycle.instance_finished(instance)


class SchedulerServer:
    """Start with ``async with SchedulerServer(settings) as server:``; ports 0 pick free ones."""

    def __init__(self, settings: SchedulerSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or RealClock()
        zone_name = settings.default_time_zone
        self.default_tz: tzinfo = ZoneInfo(zone_name) if zone_name else local_zone()
        url = settings.database_url or sqlite_url(settings.data_dir)
        self.store: Store = SqlStore(url)
        hooks = _Hooks(self)
        self.alarms = AlarmRouter(alarm_channels(settings), self.store)
        self.engine = TriggerEngine(
            self.store, clock=self.clock, default_tz=self.default_tz, on_created=self._dispatch_all
        )
        self.dispatcher = Dispatcher(
            self.store,
            clock=self.clock,
            on_finished=self._finished,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            no_worker_grace=settings.no_worker_grace,
        )
        self.lifecycle = Lifecycle(
            self.store,
            clock=self.clock,
            default_tz=self.default_tz,
            engine=self.engine,
            alarms=self.alarms,
            on_created=self._dispatch_all,
            stop_instance=self.dispatcher.stop_instance,
            history_keep=settings.history_keep,
        )
        self.service = JobService(
            self.store,
            clock=self.clock,
            default_tz=self.default_tz,
            hooks=hooks,
            history_keep=settings.history_keep,
        )
        self.workflows = WorkflowEngine(self.service)
        self.service.workflows = self.workflows
        self.lifecycle.workflows = self.workflows
        self.auth = Authenticator(self.store, clock=self.clock)
        self._grpc: grpc.aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.http_url = ""
        self.grpc_address = ""

    async def _dispatch_all(self, instances: list[Instance]) -> None:
        for instance in instances:
            await self.dispatcher.instance_created(instance)

    async def _finished(self, instance: Instance, system_failure: bool) -> None:
        await self.lifecycle.instance_finished(instance, system_failure=system_failure)

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
        await self.store.start()
        await self._check_exposure()
        await self._start_grpc()
        await self._start_http()
        await self.dispatcher.start()
        await self.engine.start()
        await self.workflows.start()
        await self.lifecycle.start()
        log.info("scheduler ready: OpenAPI %s, gRPC %s", self.http_url, self.grpc_address)

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
        server = grpc.aio.server(options=server_options())
        self.dispatcher.add_to_server(server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set("sx.v1.Scheduler", health_pb2.HealthCheckResponse.SERVING)
        host = self.settings.grpc_host
        target = f"{host}:{self.settings.grpc_port}"
        if self.settings.tls_cert and self.settings.tls_key:
            creds = server_credentials(
                cert=self.settings.tls_cert.read_bytes(),
                key=self.settings.tls_key.read_bytes(),
                client_ca=self.settings.tls_client_ca.read_bytes() if self.settings.tls_client_ca else None,
            )
            port = server.add_secure_port(target, creds)
        else:
            port = server.add_insecure_port(target)
        await server.start()
        self._grpc = server
        self.grpc_address = f"{host}:{port}"

    async def _start_http(self) -> None:
        from sx.scheduler.api._app import create_app

        app = create_app(self.service, auth=self.auth)
        # Bound here so a taken port fails start() at once. IPPROTO_TCP matters: asyncio sets TCP_NODELAY
        # only on sockets that say so, and without it every response waits ~40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in self.settings.http_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.settings.http_host, self.settings.http_port))
        except BaseException:
            sock.close()
            raise
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
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
        """Stop what runs; parts that never started (after a failed start) are skipped."""
        await self.lifecycle.stop()
        await self.workflows.stop()
        await self.engine.stop()
        await self.dispatcher.stop()
        http, task = self._http, self._http_task
        self._http = self._http_task = None
        if http is not None and task is not None:
            http.should_exit = True
            try:
                await task
            except Exception:
                log.exception("the OpenAPI server ended with an error")
        if self._grpc is not None:
            await self._grpc.stop(grace=2.0)
            self._grpc = None
        await self.store.close()

    async def __aenter__(self) -> SchedulerServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
