"""Options and settings loading shared by the ``sx-worker`` commands."""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import grpc
from click.core import ParameterSource

from sx.cli._support import (
    CliError,
    ExitCode,
)
from sx.processors import ProcessorDefinition, SxError
from sx.processors.engine import load_settings
from sx.protos import channel_credentials
from sx.worker import WorkerSettings

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

    from sx.scheduler import SchedulerSettings

__all__ = [
    "WORKER_FLAG_NAMES",
    "config_option",
    "config_sections",
    "describe_schedule",
    "given_flags",
    "load_scheduler_settings",
    "load_worker_settings",
    "log_format_option",
    "log_level_option",
    "openapi_option",
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


WORKER_FLAG_NAMES = {"group_id": "--group"}
"""Worker settings whose flag is not ``--field-name``."""


def server_option(help_text: str) -> Callable[[F], F]:
    """``--server``, repeatable and comma-separated, given to the command as one ``a,b`` string (or
    None); SX_SERVER is read with the other settings."""
    return click.option(
        "--server",
        multiple=True,
        callback=_join_servers,
        help=f"{help_text} Several: HOST:PORT,HOST:PORT or the flag repeated.",
    )


def openapi_option(
    help_text: str = "The scheduler's OpenAPI URL, e.g. http://127.0.0.1:8080.",
    *,
    required: bool = True,
    legacy_server: bool = False,
    dest: str = "openapi_url",
) -> Callable[[F], F]:
    """``--openapi URL`` (SX_OPENAPI_URL), given to the command as ``dest``.

    With ``legacy_server``, ``--server URL`` (this command's old spelling, before ``--server`` came to
    mean a gRPC HOST:PORT everywhere) still works, with a deprecation warning; a given ``--openapi``
    wins over it, and it wins over the environment."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            old = kwargs.pop("deprecated_server_url", None)
            if old is not None:
                click.echo(
                    "warning: --server URL is deprecated here: use --openapi URL "
                    "(--server names a scheduler's gRPC HOST:PORT)",
                    err=True,
                )
                if kwargs.get(dest) is None or ctx.get_parameter_source(dest) is ParameterSource.ENVIRONMENT:
                    kwargs[dest] = old
            if required and not kwargs.get(dest):
                raise click.UsageError("Missing option '--openapi' (or SX_OPENAPI_URL).", ctx)
            return f(*args, **kwargs)

        decorated: Any = command
        if legacy_server:
            decorated = click.option("--server", "deprecated_server_url", hidden=True, default=None)(
                decorated
            )
        suffix = " Required." if required else ""
        decorated = click.option("--openapi", dest, envvar="SX_OPENAPI_URL", help=help_text + suffix)(
            decorated
        )
        return typing.cast(F, decorated)

    return decorate


def _join_servers(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> str | None:
    return ",".join(value) if value else None


def given_flags(**flags: Any) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


def config_sections() -> dict[str, type[BaseSettings]]:
    """Every part's settings a config file may hold: the file is checked whole, whichever part reads it."""
    from sx.scheduler import SchedulerSettings  # imported when a file is given: the scheduler is heavy

    return {"worker": WorkerSettings, "scheduler": SchedulerSettings}


def load_worker_settings(
    config_file: Path | None,
    *,
    exit_code: ExitCode = ExitCode.USAGE,
    whole_file: bool = False,
    **flags: Any,
) -> WorkerSettings:
    """The worker's settings; ``whole_file`` checks the scheduler's part of the config file too.

    Without it the scheduler's settings class is imported only when the file does not pass without it
    (a flat file holding scheduler keys, or a typo): a worker need not load the scheduler's code."""
    sections = config_sections() if config_file and whole_file else None
    try:
        return load_settings(WorkerSettings, config_file, section="worker", sections=sections, **flags)
    except SxError as exc:
        if config_file and not whole_file:
            return load_worker_settings(config_file, exit_code=exit_code, whole_file=True, **flags)
        raise CliError(f"invalid worker settings: {exc}", exit_code) from exc


def load_scheduler_settings(
    config_file: Path | None, *, exit_code: ExitCode = ExitCode.USAGE, **flags: Any
) -> SchedulerSettings:
    from sx.scheduler import SchedulerSettings

    try:
        return load_settings(
            SchedulerSettings, config_file, section="scheduler", sections=config_sections(), **flags
        )
    except SxError as exc:
        raise CliError(f"invalid scheduler settings: {exc}", exit_code) from exc


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
