"""What the listing verbs (``workers``, ``alarms``) share: the options that reach a scheduler's OpenAPI
and pick a page, ``--output json|table``, and the table itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click

from sx.cli._options import openapi_option
from sx.cli._support import CliError, ExitCode, run_async
from sx.worker.openapi import MAX_PAGE_SIZE, OpenApiClient, OpenApiError, UnavailableError

__all__ = ["fetch_page", "listing_options", "print_table"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_OPTIONS = (
    openapi_option(legacy_server=True, dest="server_url"),
    click.option("--namespace", envvar="SX_NAMESPACE", default="default", show_default=True),
    click.option(
        "--group",
        "group_id",
        envvar="SX_GROUP_ID",
        default="default",
        show_default=True,
    ),
    click.option("--access-key-id", envvar="SX_ACCESS_KEY_ID", default=None, help="Sign requests."),
    click.option("--access-key-secret", envvar="SX_ACCESS_KEY_SECRET", default=None),
    click.option(
        "--page", "page_num", type=click.IntRange(min=1), default=1, show_default=True, help="From 1."
    ),
    click.option(
        "--page-size",
        type=click.IntRange(1, MAX_PAGE_SIZE),
        default=20,
        show_default=True,
        help="Rows a page.",
    ),
    click.option(
        "--output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="A table for people, or the page as the OpenAPI answers it.",
    ),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True),
)


def listing_options(command: F) -> F:
    """Add the options every listing verb takes."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def fetch_page(
    what: str,
    call: Callable[[OpenApiClient], Awaitable[T]],
    *,
    server_url: str,
    namespace: str,
    group_id: str,
    access_key_id: str | None,
    access_key_secret: str | None,
    timeout: float,
) -> T:
    """``call`` with a client of the group; an OpenAPI error becomes a CliError naming ``what``."""
    if (access_key_id is None) != (access_key_secret is None):
        raise CliError("--access-key-id and --access-key-secret must be given together")

    async def fetch() -> T:
        async with OpenApiClient(
            server_url,
            namespace=namespace,
            group_id=group_id,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            timeout=timeout,
        ) as client:
            return await call(client)

    try:
        return run_async(fetch())
    except ValueError as exc:  # a malformed --server
        raise CliError(str(exc)) from exc
    except UnavailableError as exc:
        raise CliError(f"listing {what} failed: {exc}", ExitCode.UNREACHABLE) from exc
    except OpenApiError as exc:
        raise CliError(f"listing {what} failed: {exc}", ExitCode.FAILED) from exc


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, footer: str) -> None:
    """Left-aligned columns as wide as their widest cell, then ``footer`` (e.g. the page and total)."""
    cells = [
        [str(header) for header in headers],
        *[["" if v is None else str(v) for v in row] for row in rows],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    click.echo(footer)
