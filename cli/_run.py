"""``sx-worker run``: serve this code's processors, embedding a scheduler when none is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import httpx

from sx.cli._logs import setup_logging
from sx.cli._options import (
    WORKER_FLAG_NAMES,
    config_option,
    describe_schedule,
    given_flags,
    load_scheduler_settings,
    load_worker_settings,
    log_format_option,
    log_level_option,
    openapi_option,
    server_option,
    worker_credentials,
)
from sx.cli._settings_flags import SettingsCommand, setting_options
from sx.cli._support import (
    CliError,
    ExitCode,
    exit_process,
    freeze_startup_objects,
    import_targets,
    install_signal_handlers,
    run_async,
)
from sx.processors import ProcessorDefinition, SxError, default_registry, default_workflows
from sx.worker import WorkerSettings

__all__ = ["banner", "run"]


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


def _worker_options() -> list[click.Parameter]:
    return setting_options(WorkerSettings, skip={"server", "data_dir"}, names=WORKER_FLAG_NAMES)


@click.command(cls=SettingsCommand, make_options=_worker_options)
@click.argument("targets", nargs=-1, required=True)
@server_option("Scheduler gRPC HOST:PORT. Default: start an embedded one.")
@openapi_option("Scheduler OpenAPI URL (for --sync; the embedded one's otherwise).", required=False)
@click.option("--sync/--no-sync", "sync", default=None, help="Register job definitions before serving.")
@click.option("--access-key-id", envvar="SX_ACCESS_KEY_ID", default=None, help="Sign --sync requests.")
@click.option("--access-key-secret", envvar="SX_ACCESS_KEY_SECRET", default=None)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The embedded scheduler's SQLite folder and the worker's batch task files (default: .sx-data).",
)
@click.option("--http-port", type=int, default=None, help="Embedded scheduler OpenAPI port (0: any).")
@click.option("--grpc-port", type=int, default=None, help="Embedded scheduler gRPC port (0: any).")
@config_option
@log_level_option
@log_format_option
def run(
    targets: tuple[str, ...],
    server: str | None,
    openapi_url: str | None,
    sync: bool | None,
    access_key_id: str | None,
    access_key_secret: str | None,
    data_dir: Path | None,
    http_port: int | None,
    grpc_port: int | None,
    config_file: Path | None,
    log_level: str,
    log_format: str,
    **worker_flags: Any,
) -> None:
    """Run a worker serving the @processor classes found in TARGETS (``pkg.mod`` or ``pkg.mod:attr``).

    With no --server, an embedded scheduler (SQLite under --data-dir) starts in this process and the
    processors' jobs are registered on it. It takes its other settings (history_keep, no_worker_grace,
    alarm URLs, ...) from their SX_ variables or the config file's [scheduler] table: `sx-worker serve
    --help` and docs/settings.md list them.
    """
    setup_logging(log_level, log_format)
    # Settings first: a typo in the configuration is reported before any user code is imported.
    settings = load_worker_settings(config_file, server=server, data_dir=data_dir, **worker_flags)
    worker_credentials(settings, ExitCode.USAGE)  # unreadable TLS files are reported here, not as a traceback
    import_targets(targets)
    definitions = default_registry().all()
    if not definitions:
        raise CliError(f"no @processor classes were registered by importing {', '.join(targets)}")
    scheduler_flags = given_flags(data_dir=data_dir, http_port=http_port, grpc_port=grpc_port)
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
    from sx.scheduler import SchedulerServer
    from sx.worker import OpenApiClient, OpenApiError, SyncOptions, Worker, WorkerRejected, sync_definitions

    embedded: SchedulerServer | None = None
    if settings.server is None:
        scheduler_settings = load_scheduler_settings(config_file, **scheduler_flags)
        try:
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
        freeze_startup_objects()
        try:
            await worker.run()
        except WorkerRejected as exc:
            raise CliError(str(exc), ExitCode.REJECTED) from exc
        return ExitCode.OK
    finally:
        if embedded is not None:
            await embedded.stop()
