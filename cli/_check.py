"""``sx-worker check``: is the scheduler reachable, and does it accept this worker's app key?"""

from __future__ import annotations

from pathlib import Path

import click
import grpc
import httpx
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sx.cli._options import (
    config_option,
    given_flags,
    load_worker_settings,
    worker_credentials,
)
from sx.cli._support import (
    ExitCode,
    run_async,
)
from sx.protos import channel_options, sign_task_request
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.worker import WorkerSettings

__all__ = ["CHECK_CALLER", "check"]

CHECK_CALLER = "sx-worker-check"
"""The worker id ``check`` names in its app-key probe; nothing registers under it."""


@click.command()
@click.option("--server", envvar="SX_SERVER", help="Scheduler gRPC HOST:PORT.")
@click.option("--openapi", "openapi_url", envvar="SX_OPENAPI_URL", help="Scheduler OpenAPI URL.")
@click.option("--namespace", default=None, help="Namespace id [SX_NAMESPACE].")
@click.option("--group", "group_id", default=None, help="Group id [SX_GROUP_ID].")
@click.option("--app-key", default=None, help="The group's app key [SX_APP_KEY].")
@config_option
def check(
    server: str | None,
    openapi_url: str | None,
    namespace: str | None,
    group_id: str | None,
    app_key: str | None,
    config_file: Path | None,
) -> None:
    """Validate the configuration and reach the scheduler the way ``run`` would (TLS settings included),
    then prove the group's app key. Exit 0 when all is well, 1 otherwise."""
    flags = given_flags(server=server, namespace=namespace, group_id=group_id, app_key=app_key)
    settings = load_worker_settings(config_file, exit_code=ExitCode.FAILED, **flags)
    credentials = worker_credentials(settings, ExitCode.FAILED)
    click.echo(f"configuration ok: group {settings.group_id} in namespace {settings.namespace}")
    if settings.server is None:
        click.echo("no --server given: `sx-worker run` would start an embedded scheduler")
        return

    async def _check() -> list[str]:
        problems = await _check_scheduler(settings, credentials)
        if openapi_url:
            problems += await _check_openapi(openapi_url)
        return problems

    problems = run_async(_check())
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        raise SystemExit(int(ExitCode.FAILED))


async def _check_scheduler(
    settings: WorkerSettings, credentials: grpc.ChannelCredentials | None
) -> list[str]:
    """The scheduler's health, then the app key, over a channel like the worker's own."""
    assert settings.server is not None
    target, options = settings.server, channel_options()
    if credentials is None:
        channel = aio.insecure_channel(target, options=options)
    else:
        channel = aio.secure_channel(target, credentials, options=options)
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service="sx.v1.Scheduler"), timeout=5)
        except aio.AioRpcError as exc:
            return [f"gRPC {target}: {exc.code().name} {exc.details()}"]
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        click.echo(f"gRPC {target}{' (TLS)' if credentials else ''}: {status}")
        problem = await _check_app_key(channel, settings)
    return [problem] if problem else []


async def _check_app_key(channel: aio.Channel, settings: WorkerSettings) -> str | None:
    """Prove the app key with one task-store query signed with it (the key itself is never sent).

    The scheduler checks the proof first (UNAUTHENTICATED: wrong key or unknown group), then refuses
    this caller, which holds no instance, with PERMISSION_DENIED: that answer means the key is right.
    A registration would prove it too, but would make the check a live worker for a moment (one that
    broadcast and script instances could be sent to, or that replaces a worker with the same id).
    """
    where = f"group {settings.group_id!r} in namespace {settings.namespace!r}"
    if not settings.app_key:
        return f"app key for {where}: none is configured (--app-key or SX_APP_KEY)"
    caller = scheduler_pb2.TaskCaller(
        namespace=settings.namespace, group_id=settings.group_id, worker_id=CHECK_CALLER
    )
    request = scheduler_pb2.QueryTasksRequest(caller=caller, instance_id=0)
    sign_task_request(settings.app_key, "QueryTasks", request)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    try:
        await stub.QueryTasks(request, timeout=5)
    except aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            # The scheduler's reason comes last: "caller.proof: worker ... of group ...: <why>".
            why = (exc.details() or "").rpartition(": ")[2]
            return f"app key for {where}: refused by the scheduler: {why}"
        if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
            return f"app key for {where}: not checked: {exc.code().name} {exc.details()}"
    click.echo(f"app key: accepted for {where}")
    return None


async def _check_openapi(openapi_url: str) -> list[str]:
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{openapi_url.rstrip('/')}/health")
    except httpx.HTTPError as exc:
        return [f"OpenAPI {openapi_url}: {exc}"]
    click.echo(f"OpenAPI {openapi_url}: HTTP {response.status_code}")
    return [] if response.status_code == 200 else [f"OpenAPI {openapi_url}: HTTP {response.status_code}"]
