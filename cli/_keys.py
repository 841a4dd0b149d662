"""``sx-worker keys``: manage the access keys that sign OpenAPI requests, directly on a scheduler's store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sx.cli._options import load_scheduler_settings
from sx.cli._support import CliError, ExitCode, emit, run_async

__all__ = ["create", "delete", "keys", "list_keys", "store_options", "with_store_options"]

store_options = [
    click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="SQLite store folder."),
    click.option("--database-url", default=None, help="sqlite:///path or postgresql://user@host/db."),
    click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="SX_CONFIG",
        help="TOML or JSON settings file ([scheduler] table).",
    ),
]


def with_store_options(f: Any) -> Any:
    for option in reversed(store_options):
        f = option(f)
    return f


async def _with_store(config_file: Path | None, flags: dict[str, Any], action: Any) -> Any:
    from sx.scheduler.api import ServiceError
    from sx.scheduler.store.sql import SqlStore, sqlite_url

    settings = load_scheduler_settings(config_file, **flags)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqlStore(settings.database_url or sqlite_url(settings.data_dir))
    await store.start()
    try:
        return await action(store)
    except ServiceError as exc:
        raise CliError(str(exc), ExitCode.FAILED) from exc
    finally:
        await store.close()


@click.group()
def keys() -> None:
    """Create, list and delete access keys (id and secret) of a namespace."""


@keys.command()
@click.option("--namespace", required=True, help="The namespace the key reaches (and only it).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@with_store_options
def create(namespace: str, output: str, config_file: Path | None, **flags: Any) -> None:
    """Create a key; its secret is shown once. The namespace is created if it does not exist yet
    (once a key exists, the OpenAPI only takes signed requests, so this is how a team bootstraps)."""
    from sx.scheduler.api import create_access_key
    from sx.scheduler.store import Namespace

    async def action(store: Any) -> Any:
        if await store.get_namespace(namespace) is None:
            await store.create_namespace(Namespace(id=namespace, name=namespace))
            click.echo(f"created namespace {namespace}", err=True)
        return await create_access_key(store, namespace)

    key = run_async(_with_store(config_file, flags, action))
    payload = {"accessKeyId": key.key_id, "accessKeySecret": key.secret, "namespace": key.namespace}
    emit(output, payload, lambda: click.echo(f"{key.key_id}  {key.secret}  (namespace {key.namespace})"))


@keys.command(name="list")
@click.option("--namespace", default=None)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@with_store_options
def list_keys(namespace: str | None, output: str, config_file: Path | None, **flags: Any) -> None:
    """List keys (without their secrets)."""
    from sx.scheduler.api import list_access_keys

    found = run_async(_with_store(config_file, flags, lambda store: list_access_keys(store, namespace)))
    payload = [{"accessKeyId": k.key_id, "namespace": k.namespace, "enabled": k.enabled} for k in found]

    def text() -> None:
        for k in found:
            click.echo(f"{k.key_id}  namespace {k.namespace}")
        if not found:
            click.echo("no access keys: the OpenAPI accepts unsigned requests")

    emit(output, payload, text)


@keys.command()
@click.argument("key_id")
@with_store_options
def delete(key_id: str, config_file: Path | None, **flags: Any) -> None:
    """Delete a key."""
    from sx.scheduler.api import delete_access_key

    run_async(_with_store(config_file, flags, lambda store: delete_access_key(store, key_id)))
    click.echo(f"deleted {key_id}")
