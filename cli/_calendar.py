"""``sx-worker calendar``: load a calendar (a named set of days) from a file into the scheduler."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import click

from sx.cli._options import openapi_option
from sx.cli._support import CliError, ExitCode, run_async

__all__ = ["calendar", "load", "read_days"]


def read_days(path: Path) -> list[date]:
    """Days from a JSON list or from text with one ``yyyy-MM-dd`` a line (``#`` starts a comment)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise CliError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(items, list):
            raise CliError(f"{path}: must hold a JSON list of yyyy-MM-dd dates")
        lines = [(i + 1, str(item)) for i, item in enumerate(items)]
    else:
        lines = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), start=1)]
    days: list[date] = []
    for number, value in lines:
        if not value:
            continue
        try:
            days.append(date.fromisoformat(value))
        except ValueError:
            raise CliError(f"{path}:{number}: {value!r} is not a yyyy-MM-dd date") from None
    return days


@click.group()
def calendar() -> None:
    """Calendars: cron jobs bound to one fire only on its days."""


@calendar.command()
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@openapi_option(legacy_server=True, dest="server_url")
@click.option("--namespace", envvar="SX_NAMESPACE", default="default", show_default=True)
@click.option("--description", default="")
@click.option("--access-key-id", envvar="SX_ACCESS_KEY_ID", default=None)
@click.option("--access-key-secret", envvar="SX_ACCESS_KEY_SECRET", default=None)
def load(
    name: str,
    file: Path,
    server_url: str,
    namespace: str,
    description: str,
    access_key_id: str | None,
    access_key_secret: str | None,
) -> None:
    """Create or replace calendar NAME with the days listed in FILE."""
    from sx.worker import OpenApiClient, OpenApiError

    days = read_days(file)

    async def _load() -> int:
        async with OpenApiClient(
            server_url,
            namespace=namespace,
            group_id="",
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
        ) as client:
            stored = await client.put_calendar(name, days, description=description)
        return len(stored.days)

    try:
        count = run_async(_load())
    except OpenApiError as exc:
        raise CliError(f"loading calendar {name!r} failed: {exc}", ExitCode.FAILED) from exc
    click.echo(f"calendar {name!r} in namespace {namespace}: {count} days")
