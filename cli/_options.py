"""Options and settings loading shared by the ``sx-worker`` commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc

from sx.cli._support import (
    CliError,
    ExitCode,
)
from sx.processors import ProcessorDefinition, SxError
from sx.processors.engine import load_settings
from sx.protos import channel_credentials
from sx.worker import WorkerSettings

__all__ = [
    "config_option",
    "describe_schedule",
    "given_flags",
    "load_worker_settings",
    "log_format_option",
    "log_level_option",
    "output_option",
    "server_option",
    "worker_credentials",
]

F = TypeVar("F", bound=Callable[..., Any])

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
log_format_option = click.option(
    "--log-format",
    default="text",
    envvar="SX_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    show_default=True,
    help="json: one JSON object per line, with the job run's ids as fields.",
)
output_option = click.option(
    "--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output format."
)


def server_option(help_text: str) -> Callable[[F], F]:
    """``--server``, repeatable and comma-separated, given to the command as one ``a,b`` string (or
    None); SX_SERVER is read with the other settings."""
    return click.option(
        "--server",
        multiple=True,
        callback=_join_servers,
        help=f"{help_text} Several: HOST:PORT,HOST:PORT or the flag repeated [SX_SERVER].",
    )


def _join_servers(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> str | None:
    return ",".join(value) if value else None


def given_flags(**flags: Any) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


def load_worker_settings(
    config_file: Path | None, *, exit_code: ExitCode = ExitCode.USAGE, **flags: Any
) -> WorkerSettings:
    try:
        return load_settings(WorkerSettings, config_file, section="worker", **flags)
    except SxError as exc:
        raise CliError(f"invalid worker settings: {exc}", exit_code) from exc


def worker_credentials(settings: WorkerSettings, exit_code: ExitCode) -> grpc.ChannelCredentials | None:
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
