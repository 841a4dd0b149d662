"""``sx-worker sync``: register the @processor jobs of TARGETS with a scheduler through its OpenAPI."""

from __future__ import annotations

import click

from sx.cli._logs import setup_logging
from sx.cli._options import openapi_option
from sx.cli._support import CliError, ExitCode, import_targets, run_async
from sx.processors import (
    DefinitionError,
    ProcessorDefinition,
    WorkflowSpec,
    default_registry,
    default_workflows,
)
from sx.worker.openapi import (
    AuthError,
    OpenApiClient,
    OpenApiError,
    SyncOptions,
    SyncPlan,
    SyncResult,
    UnavailableError,
    sync_definitions,
)

__all__ = ["sync"]


@click.command()
@click.argument("targets", nargs=-1, required=True)
@openapi_option(legacy_server=True, dest="server_url")
@click.option("--namespace", envvar="SX_NAMESPACE", default="default", show_default=True)
@click.option("--group", "group_id", envvar="SX_GROUP_ID", default="default", show_default=True)
@click.option("--access-key-id", envvar="SX_ACCESS_KEY_ID", default=None, help="Sign requests.")
@click.option("--access-key-secret", envvar="SX_ACCESS_KEY_SECRET", default=None)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--prune", is_flag=True, help="Disable managed jobs that are no longer in code.")
@click.option("--delete", is_flag=True, help="With --prune: delete them instead of disabling.")
@click.option(
    "--atomic",
    is_flag=True,
    help="Apply nothing unless every job and workflow is accepted (undo this run's changes otherwise).",
)
@click.option(
    "--progress-every",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="A progress line on stderr every N jobs (0: none).",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option(
    "--log-level",
    default="warning",
    envvar="SX_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    show_default=True,
)
def sync(
    targets: tuple[str, ...],
    server_url: str,
    namespace: str,
    group_id: str,
    access_key_id: str | None,
    access_key_secret: str | None,
    dry_run: bool,
    prune: bool,
    delete: bool,
    atomic: bool,
    progress_every: int,
    output: str,
    timeout: float,
    log_level: str,
) -> None:
    """Create or update the jobs of the @processor classes in TARGETS (``pkg.mod`` or ``pkg.mod:attr``)
    and their workflows in a group, print the plan and a summary. Exit 1 when a definition was refused:
    the valid ones are applied, or with --atomic nothing is."""
    setup_logging(log_level)
    if delete and not prune:
        raise CliError("--delete only applies with --prune")
    if (access_key_id is None) != (access_key_secret is None):
        raise CliError("give both --access-key-id and --access-key-secret, or neither")
    if not server_url.startswith(("http://", "https://")):
        raise CliError(f"--openapi={server_url!r}: the OpenAPI URL must start with http:// or https://")
    import_targets(targets)
    definitions = default_registry().all()
    workflows = default_workflows().all()
    if not definitions and not workflows:
        raise CliError(f"no @processor classes were registered by importing {', '.join(targets)}")
    options = SyncOptions(
        dry_run=dry_run,
        prune=prune,
        delete=delete,
        atomic=atomic,
        progress_every=progress_every,
        progress=lambda line: click.echo(line, err=True),
    )
    result = run_async(
        _sync(
            server_url,
            definitions,
            options,
            workflows=workflows,
            namespace=namespace,
            group_id=group_id,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            request_timeout=timeout,
            text=output == "text",
        )
    )
    if output == "json":
        click.echo(result.to_json_text())
    else:
        click.echo(result.summary())
    if not result.ok:
        raise SystemExit(int(ExitCode.FAILED))


async def _sync(
    server_url: str,
    definitions: list[ProcessorDefinition],
    options: SyncOptions,
    *,
    workflows: list[WorkflowSpec],
    namespace: str,
    group_id: str,
    access_key_id: str | None,
    access_key_secret: str | None,
    request_timeout: float,
    text: bool,
) -> SyncResult:
    try:
        async with OpenApiClient(
            server_url,
            namespace=namespace,
            group_id=group_id,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            timeout=request_timeout,
        ) as client:
            return await sync_definitions(
                client, definitions, options, workflows=workflows, on_plan=_print_table if text else None
            )
    except UnavailableError as exc:
        raise CliError(
            f"cannot reach the OpenAPI at {server_url}: {exc.message}", ExitCode.UNREACHABLE
        ) from exc
    except AuthError as exc:
        raise CliError(f"the scheduler refused our credentials: {exc}", ExitCode.REJECTED) from exc
    except OpenApiError as exc:
        raise CliError(f"job sync against {server_url} failed: {exc}", ExitCode.FAILED) from exc
    except DefinitionError as exc:
        raise CliError(f"invalid job definitions: {exc}") from exc


def _print_table(plan: SyncPlan) -> None:
    click.echo(plan.table())
