"""``sx-worker serve``: run the scheduler alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from sx.cli._logs import setup_logging
from sx.cli._options import (
    config_option,
    load_scheduler_settings,
    log_format_option,
    log_level_option,
)
from sx.cli._settings_flags import SettingsCommand, setting_options
from sx.cli._support import (
    CliError,
    freeze_startup_objects,
    install_signal_handlers,
    run_async,
)
from sx.processors import SxError

__all__ = ["serve"]


def _scheduler_options() -> list[click.Parameter]:
    from sx.scheduler import SchedulerSettings

    return setting_options(SchedulerSettings)


@click.command(cls=SettingsCommand, make_options=_scheduler_options)
@config_option
@log_level_option
@log_format_option
def serve(config_file: Path | None, log_level: str, log_format: str, **flags: Any) -> None:
    """Run the scheduler alone, for workers on other machines (``sx-worker run --server HOST:PORT``)."""
    from sx.scheduler import SchedulerServer

    setup_logging(log_level, log_format)
    settings = load_scheduler_settings(config_file, **flags)

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
        freeze_startup_objects()  # else full collections hold the loop for 50-120 ms (the ExecuteJob p99)
        click.echo(
            f"scheduler: OpenAPI {server.http_url} (docs {server.http_url}/docs), gRPC {server.grpc_address}"
        )
        try:
            await stopped.wait()
        finally:
            await server.stop()

    run_async(_serve())
