"""``sx-worker check``: which scheduler addresses answer, and do they accept this worker's app key?"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import grpc
import httpx
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sx.cli._options import (
    WORKER_FLAG_NAMES,
    config_option,
    load_worker_settings,
    openapi_option,
    server_option,
    worker_credentials,
)
from sx.cli._settings_flags import SettingsCommand, setting_options
from sx.cli._support import (
    ExitCode,
    run_async,
)
from sx.protos import sign_task_request
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.worker import SchedulerAddress, WorkerSettings

__all__ = ["CHECK_CALLER", "check"]

CHECK_CALLER = "sx-worker-check"
"""The worker id ``check`` names in its app-key probe; nothing registers under it."""


def _worker_options() -> list[click.Parameter]:
    return setting_options(WorkerSettings, skip={"server"}, names=WORKER_FLAG_NAMES)


@click.command(cls=SettingsCommand, make_options=_worker_options)
@server_option("Scheduler gRPC HOST:PORT.")
@openapi_option("Scheduler OpenAPI URL: its health is checked too.", required=False)
@config_option
def check(server: str | None, openapi_url: str | None, config_file: Path | None, **flags: Any) -> None:
    """Validate the configuration, reach each scheduler address the way ``run`` would (TLS settings
    included) and prove the group's app key at each that answers. Exit 0 when all is well (an address
    that does not answer is a warning while another does), 1 otherwise."""
    settings = load_worker_settings(
        config_file, exit_code=ExitCode.FAILED, whole_file=True, server=server, **flags
    )
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


@dataclass(frozen=True)
class _Answer:
    """What one scheduler address said: its health status (None when it did not answer) and then, when
    it answered, what it made of the app key."""

    address: SchedulerAddress
    status: str | None
    trouble: str | None = None
    """Why it did not answer, or why it refused the key."""


async def _check_scheduler(
    settings: WorkerSettings, credentials: grpc.ChannelCredentials | None
) -> list[str]:
    """Every scheduler address's health, then the app key at each that answers, over channels like the
    worker's own. Addresses that do not answer are problems only when none does: the worker uses any."""
    silent: list[str] = []
    addresses: list[SchedulerAddress] = []
    for entry in settings.server_addresses:
        try:
            addresses += await SchedulerAddress.resolve(entry)
        except OSError as exc:
            silent.append(f"gRPC {exc}")
    several = len(addresses) + len(silent) > 1
    answers = await asyncio.gather(*(_check_address(a, settings, credentials, several) for a in addresses))
    problems: list[str] = []
    for answer in answers:
        if answer.status is None:
            silent.append(f"gRPC {answer.address}: {answer.trouble}")
            continue
        click.echo(f"gRPC {answer.address}{' (TLS)' if credentials else ''}: {answer.status}")
        if answer.trouble is not None:
            problems.append(answer.trouble)
        elif settings.app_key:
            click.echo(f"app key: accepted for {_where(settings, answer.address if several else None)}")
    if not any(answer.status is not None for answer in answers):
        return silent
    for line in silent:
        click.echo(f"warning: {line} (not answering: `run` uses the addresses that do)", err=True)
    if not settings.app_key:
        problems.append(f"app key for {_where(settings)}: none is configured (--app-key or SX_APP_KEY)")
    return problems


async def _check_address(
    address: SchedulerAddress,
    settings: WorkerSettings,
    credentials: grpc.ChannelCredentials | None,
    several: bool,
) -> _Answer:
    async with address.channel(credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service="sx.v1.Scheduler"), timeout=5)
        except aio.AioRpcError as exc:
            return _Answer(address, None, f"{exc.code().name} {exc.details()}")
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if not settings.app_key:
            return _Answer(address, status)
        where = _where(settings, address if several else None)
        return _Answer(address, status, await _check_app_key(channel, settings, where))


def _where(settings: WorkerSettings, address: SchedulerAddress | None = None) -> str:
    group = f"group {settings.group_id!r} in namespace {settings.namespace!r}"
    return group if address is None else f"{group} at {address}"


async def _check_app_key(channel: aio.Channel, settings: WorkerSettings, where: str) -> str | None:
    """Prove the app key with one task-store query signed with it (the key itself is never sent); the
    problem, or None when the key is accepted.

    The scheduler checks the proof first (UNAUTHENTICATED: wrong key or unknown group), then refuses
    this caller, which holds no instance, with PERMISSION_DENIED: that answer means the key is right.
    A registration would prove it too, but would make the check a live worker for a moment (one that
    broadcast and script instances could be sent to, or that replaces a worker with the same id).
    """
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
    return None


async def _check_openapi(openapi_url: str) -> list[str]:
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{openapi_url.rstrip('/')}/health")
    except httpx.HTTPError as exc:
        return [f"OpenAPI {openapi_url}: {exc}"]
    click.echo(f"OpenAPI {openapi_url}: HTTP {response.status_code}")
    return [] if response.status_code == 200 else [f"OpenAPI {openapi_url}: HTTP {response.status_code}"]
