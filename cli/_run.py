"""``sx-worker run``, ``serve``, ``check`` and ``list``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
import grpc
import httpx
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sx.cli._support import (
    CliError,
    ExitCode,
    emit,
    exit_process,
    import_targets,
    install_signal_handlers,
    run_async,
    setup_logging,
)
from sx.processors._config_file import load_settings
from sx.processors._errors import SxError
from sx.processors._registry import ProcessorDefinition, default_registry
from sx.processors._workflow import default_workflows
from sx.protos._auth import make_proof, task_caller_subject
from sx.protos._options import channel_credentials, channel_options
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.worker._settings import WorkerSettings

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="SX_CONFIG",
    help="TOML or JSON settings file ([worker] and [scheduler] tables).",
)
log_level_option = click.option(
    "--log-level",
    default="info",
    envvar="SX_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    show_default=True,
)
output_option = click.option(
    "--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output format."
)


def _worker_flags(**flags: Any) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


def _load_worker(
    config_file: Path | None, *, exit_code: ExitCode = ExitCode.USAGE, **flags: Any
) -> WorkerSettings:
    try:
        return load_settings(WorkerSettings, config_file, section="worker", **flags)
    except SxError as exc:
        raise CliError(f"invalid worker settings: {exc}", exit_code) from exc


def _credentials(settings: WorkerSettings, exit_code: ExitCode) -> grpc.ChannelCredentials | None:
    """The TLS credentials the worker's connection uses; a bad TLS setting is a CliError naming it."""
    try:
        return channel_credentials(
            tls_ca=settings.tls_ca, tls_cert=settings.tls_cert, tls_key=settings.tls_key
        )
    except ValueError as exc:
        raise CliError(f"invalid worker settings: {exc}", exit_code) from exc


def describe_schedule(definition: ProcessorDefinition) -> str:
    schedule = definition.spec.schedule
    return f"{schedule.time_type.name.lower()} {schedule.expression}".strip()


def banner(
    *,
    definitions: list[ProcessorDefinition],
    settings: WorkerSettings,
    worker_id: str,
    openapi: str | None,
    embedded: bool,
) -> str:
    """What the worker serves and where it connects (never a secret such as the app key)."""
    lines = [
        "sx-worker",
        f"  scheduler   {settings.server}" + ("  (embedded)" if embedded else ""),
    ]
    if openapi:
        lines.append(f"  OpenAPI     {openapi}   docs: {openapi}/docs")
    lines += [
        f"  group       {settings.group_id} (namespace {settings.namespace})",
        f"  worker      {worker_id}",
        f"  concurrency {settings.concurrency}",
        "  processors:",
    ]
    for d in definitions:
        lines.append(f"    - {d.name}  [{d.spec.execute_mode.value}]  {describe_schedule(d)}")
    workflows = default_workflows().all()
    if workflows:
        lines.append("  workflows:")
        for w in workflows:
            wire = w.to_create_params()
            lines.append(f"    - {w.name}  {len(wire['nodes'])} jobs, {len(wire['edges'])} edges")
    return "\n".join(lines)


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--server", envvar="SX_SERVER", help="Scheduler gRPC HOST:PORT. Default: start an embedded one."
)
@click.option("--openapi", "openapi_url", envvar="SX_OPENAPI_URL", help="Scheduler OpenAPI URL (for --sync).")
@click.option("--namespace", default=None, help="Namespace id [SX_NAMESPACE].")
@click.option("--group", "group_id", default=None, help="Group id [SX_GROUP_ID].")
@click.option("--app-key", default=None, help="The group's app key [SX_APP_KEY].")
@click.option(
    "--concurrency", type=int, default=None, help="Instances and subtasks at once [SX_CONCURRENCY]."
)
@click.option("--sync/--no-sync", "sync", default=None, help="Register job definitions before serving.")
@click.option("--access-key-id", envvar="SX_ACCESS_KEY_ID", default=None, help="Sign --sync requests.")
@click.option("--access-key-secret", envvar="SX_ACCESS_KEY_SECRET", default=None)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Embedded scheduler data.")
@click.option("--http-port", type=int, default=None, help="Embedded scheduler OpenAPI port (0: any).")
@click.option("--grpc-port", type=int, default=None, help="Embedded scheduler gRPC port (0: any).")
@config_option
@log_level_option
def run(
    targets: tuple[str, ...],
    server: str | None,
    openapi_url: str | None,
    namespace: str | None,
    group_id: str | None,
    app_key: str | None,
    concurrency: int | None,
    sync: bool | None,
    access_key_id: str | None,
    access_key_secret: str | None,
    data_dir: Path | None,
    http_port: int | None,
    grpc_port: int | None,
    config_file: Path | None,
    log_level: str,
) -> None:
    """Run a worker serving the @processor classes found in TARGETS (``pkg.mod`` or ``pkg.mod:attr``).

    With no --server, an embedded scheduler (SQLite under --data-dir) starts in this process and the
    processors' jobs are registered on it.
    """
    setup_logging(log_level)
    # Settings first: a typo in the configuration is reported before any user code is imported.
    settings = _load_worker(
        config_file,
        **_worker_flags(
            server=server, namespace=namespace, group_id=group_id, app_key=app_key, concurrency=concurrency
        ),
    )
    _credentials(settings, ExitCode.USAGE)  # unreadable TLS files are reported here, not as a traceback
    import_targets(targets)
    definitions = default_registry().all()
    if not definitions:
        raise CliError(f"no @processor classes were registered by importing {', '.join(targets)}")
    scheduler_flags = _worker_flags(data_dir=data_dir, http_port=http_port, grpc_port=grpc_port)
    code = run_async(
        _run(
            settings,
            definitions,
            openapi_url=openapi_url,
            sync=sync,
            access_key=(access_key_id, access_key_secret),
            config_file=config_file,
            scheduler_flags=scheduler_flags,
        )
    )
    exit_process(int(code))


async def _run(
    settings: WorkerSettings,
    definitions: list[ProcessorDefinition],
    *,
    openapi_url: str | None,
    sync: bool | None,
    access_key: tuple[str | None, str | None],
    config_file: Path | None,
    scheduler_flags: dict[str, Any],
) -> ExitCode:
    from sx.scheduler._server import SchedulerServer
    from sx.scheduler._settings import SchedulerSettings
    from sx.worker._worker import Worker, WorkerRejected
    from sx.worker.openapi._client import OpenApiClient, OpenApiError
    from sx.worker.openapi._sync import SyncOptions, sync_definitions

    embedded: SchedulerServer | None = None
    if settings.server is None:
        try:
            scheduler_settings = load_settings(
                SchedulerSettings, config_file, section="scheduler", **scheduler_flags
            )
            embedded = SchedulerServer(scheduler_settings)
            await embedded.start()
        except (SxError, OSError) as exc:
            raise CliError(f"cannot start the embedded scheduler: {exc}") from exc
        openapi_url = embedded.http_url
        settings = settings.model_copy(update={"server": embedded.grpc_address})
        sync = True  # the embedded default always registers the jobs it runs
    try:
        if sync or embedded is not None:
            if not openapi_url:
                raise CliError(
                    "--sync needs the scheduler's OpenAPI URL: pass --openapi URL (SX_OPENAPI_URL)"
                )
            try:
                async with OpenApiClient(
                    openapi_url,
                    namespace=settings.namespace,
                    group_id=settings.group_id,
                    access_key_id=access_key[0],
                    access_key_secret=access_key[1],
                ) as client:
                    if embedded is not None:
                        group = await client.ensure_group()
                        settings = settings.model_copy(update={"app_key": group.app_key})
                    result = await sync_definitions(
                        client, definitions, SyncOptions(), workflows=default_workflows().all()
                    )
                    click.echo(result.summary(), err=True)
                    if not result.ok:
                        return ExitCode.FAILED
            except (OpenApiError, httpx.HTTPError) as exc:
                raise CliError(f"job sync against {openapi_url} failed: {exc}", ExitCode.UNREACHABLE) from exc
        worker = Worker(settings, registry=default_registry())
        click.echo(
            banner(
                definitions=definitions,
                settings=worker.settings,
                worker_id=worker.worker_id,
                openapi=openapi_url,
                embedded=bool(embedded),
            ),
            err=True,
        )
        install_signal_handlers(worker.shutdown)
        try:
            await worker.run()
        except WorkerRejected as exc:
            raise CliError(str(exc), ExitCode.REJECTED) from exc
        return ExitCode.OK
    finally:
        if embedded is not None:
            await embedded.stop()


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="SQLite store folder.")
@click.option("--database-url", default=None, help="sqlite:///path or postgresql://user@host/db.")
@click.option("--http-host", default=None)
@click.option("--http-port", type=int, default=None)
@click.option("--grpc-host", default=None)
@click.option("--grpc-port", type=int, default=None)
@click.option(
    "--allow-remote-unsigned", is_flag=True, default=None, help="Listen remotely with no access key."
)
@click.option("--default-time-zone", default=None, help="IANA zone for jobs that name none.")
@config_option
@log_level_option
def serve(config_file: Path | None, log_level: str, **flags: Any) -> None:
    """Run the scheduler alone, for workers on other machines (``sx-worker run --server HOST:PORT``)."""
    from sx.scheduler._server import SchedulerServer
    from sx.scheduler._settings import SchedulerSettings

    setup_logging(log_level)
    try:
        settings = load_settings(SchedulerSettings, config_file, section="scheduler", **flags)
    except SxError as exc:
        raise CliError(f"invalid scheduler settings: {exc}") from exc

    async def _serve() -> None:
        server = SchedulerServer(settings)
        try:
            await server.start()
        except SxError as exc:
            raise CliError(str(exc)) from exc
        stopped = asyncio.Event()

        async def stop() -> None:
            stopped.set()

        install_signal_handlers(stop)
        click.echo(
            f"scheduler: OpenAPI {server.http_url} (docs {server.http_url}/docs), gRPC {server.grpc_address}"
        )
        try:
            await stopped.wait()
        finally:
            await server.stop()

    run_async(_serve())


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
    flags = _worker_flags(server=server, namespace=namespace, group_id=group_id, app_key=app_key)
    settings = _load_worker(config_file, exit_code=ExitCode.FAILED, **flags)
    credentials = _credentials(settings, ExitCode.FAILED)
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
    subject = task_caller_subject(settings.namespace, settings.group_id, CHECK_CALLER, 0)
    caller = scheduler_pb2.TaskCaller(
        namespace=settings.namespace,
        group_id=settings.group_id,
        worker_id=CHECK_CALLER,
        proof=make_proof(settings.app_key, subject),
    )
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    try:
        await stub.QueryTasks(scheduler_pb2.QueryTasksRequest(caller=caller, instance_id=0), timeout=5)
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


@click.command(name="list")
@click.argument("targets", nargs=-1, required=True)
@output_option
def list_processors(targets: tuple[str, ...], output: str) -> None:
    """List the @processor classes found in TARGETS and their job definitions."""
    import_targets(targets)
    definitions = default_registry().all()
    payload = [
        {
            "name": d.name,
            "class": f"{d.cls.__module__}.{d.cls.__qualname__}",
            "job": d.spec.to_create_params(),
        }
        for d in definitions
    ]

    def text() -> None:
        if not definitions:
            click.echo("no processors registered")
        for d in definitions:
            click.echo(f"{d.name}  [{d.spec.execute_mode.value}]  {describe_schedule(d)}")
            for key, value in d.spec.to_create_params().items():
                click.echo(f"    {key}: {value}")

    emit(output, payload, text)
