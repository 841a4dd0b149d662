"""``sx-worker logs JOB_ID INSTANCE_ID``: an instance's online log, printed or followed.

Text lines read ``time LEVEL [worker] [task id name] message``; ``--output json`` prints one JSON object
per line (the OpenAPI's fields), so a follow can be piped into a log tool. ``--follow`` keeps reading
(long polls) until the instance finished and its last lines were printed.
"""

from __future__ import annotations

import json

import click

from sx.cli._support import CliError, ExitCode, run_async
from sx.worker.openapi import (
    InstanceLog,
    InstanceLogLine,
    NotFoundError,
    OpenApiClient,
    OpenApiError,
    UnavailableError,
)

__all__ = ["logs"]

FOLLOW_WAIT = 20
"""Seconds one follow request waits for new lines."""
PAGE_LINES = 1_000


@click.command()
@click.argument("job_id", type=click.IntRange(min=1))
@click.argument("instance_id", type=click.IntRange(min=1))
@click.option(
    "--server",
    "server_url",
    envvar="SX_OPENAPI_URL",
    required=True,
    help="The scheduler's OpenAPI URL, e.g. http://127.0.0.1:8080 [SX_OPENAPI_URL].",
)
@click.option(
    "--namespace", envvar="SX_NAMESPACE", default="default", show_default=True, help="[SX_NAMESPACE]"
)
@click.option(
    "--group", "group_id", envvar="SX_GROUP_ID", default="default", show_default=True, help="[SX_GROUP_ID]"
)
@click.option(
    "--access-key-id", envvar="SX_ACCESS_KEY_ID", default=None, help="Sign requests [SX_ACCESS_KEY_ID]."
)
@click.option(
    "--access-key-secret", envvar="SX_ACCESS_KEY_SECRET", default=None, help="[SX_ACCESS_KEY_SECRET]"
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the instance finished.")
@click.option(
    "--level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    default=None,
    help="Only lines at this level or above.",
)
@click.option(
    "--task-id", type=click.IntRange(min=0), default=None, help="Map modes: only this subtask's lines."
)
@click.option("--task-name", default=None, help="Map modes: only lines of subtasks of this name.")
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Start after this line."
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people; json: one object per line (the OpenAPI's fields).",
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
def logs(
    job_id: int,
    instance_id: int,
    server_url: str,
    namespace: str,
    group_id: str,
    access_key_id: str | None,
    access_key_secret: str | None,
    follow: bool,
    level: str | None,
    task_id: int | None,
    task_name: str | None,
    offset: int,
    output: str,
    timeout: float,
) -> None:
    """Print the log lines of instance INSTANCE_ID of job JOB_ID (what its processor logged)."""
    if (access_key_id is None) != (access_key_secret is None):
        raise CliError("--access-key-id and --access-key-secret must be given together")

    def show(log: InstanceLog) -> None:
        for line in log.lines:
            click.echo(_json_line(line) if output == "json" else _text_line(line))

    async def read() -> None:
        async with OpenApiClient(
            server_url,
            namespace=namespace,
            group_id=group_id,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            # A follow request waits up to FOLLOW_WAIT seconds on the scheduler before it answers.
            timeout=timeout + FOLLOW_WAIT if follow else timeout,
        ) as client:
            if follow:
                async for log in client.follow_instance_log(
                    job_id,
                    instance_id,
                    offset=offset,
                    level=level,
                    task_id=task_id,
                    task_name=task_name,
                    wait=FOLLOW_WAIT,
                ):
                    show(log)
                return
            after = offset
            while True:
                log = await client.get_instance_log(
                    job_id,
                    instance_id,
                    offset=after,
                    limit=PAGE_LINES,
                    level=level,
                    task_id=task_id,
                    task_name=task_name,
                )
                show(log)
                if len(log.lines) < PAGE_LINES:
                    return
                after = log.next_offset

    try:
        run_async(read())
    except ValueError as exc:  # a malformed --server
        raise CliError(str(exc)) from exc
    except NotFoundError as exc:
        raise CliError(f"reading the log failed: {exc}", ExitCode.NOT_FOUND) from exc
    except UnavailableError as exc:
        raise CliError(f"reading the log failed: {exc}", ExitCode.UNREACHABLE) from exc
    except OpenApiError as exc:
        raise CliError(f"reading the log failed: {exc}", ExitCode.FAILED) from exc


def _text_line(line: InstanceLogLine) -> str:
    task = f" [task {line.task_id} {line.task_name}]" if line.task_name else ""
    worker = f" [{line.worker_id}]" if line.worker_id else ""
    return f"{line.time} {line.level:<8}{worker}{task} {line.message}"


def _json_line(line: InstanceLogLine) -> str:
    return json.dumps(line.model_dump(by_alias=True), ensure_ascii=False)
