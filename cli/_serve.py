"""``sx-worker serve``: run the scheduler alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from sx.cli._logs import setup_logging
from sx.cli._options import (
    config_option,
    log_format_option,
    log_level_option,
)
from sx.cli._support import (
    CliError,
    install_signal_handlers,
    run_async,
)
from sx.processors import SxError
from sx.processors.engine import load_settings

__all__ = ["serve"]


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
@log_format_option
def serve(config_file: Path | None, log_level: str, log_format: str, **flags: Any) -> None:
    """Run the scheduler alone, for workers on other machines (``sx-worker run --server HOST:PORT``)."""
    from sx.scheduler import SchedulerServer, SchedulerSettings

    setup_logging(log_level, log_format)
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
