"""What the operator verbs (``jobs``, ``instances``, ``workflows``) share: the options that reach a
scheduler's OpenAPI as one ``Api``, a call through the typed client with its errors turned into exit
codes, job lookup by id or name, and ``--output json``.

Exit codes: 0 done; 1 the scheduler refused the operation (or a watched instance did not succeed);
2 bad arguments; 3 the scheduler refused the credentials; 4 it could not be reached; 5 no such job,
instance or workflow.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from sx.cli._options import openapi_option
from sx.cli._support import CliError, ExitCode, run_async
from sx.worker.openapi import (
    AuthError,
    InvalidRequestError,
    JobInfo,
    NotFoundError,
    OpenApiClient,
    OpenApiError,
    UnavailableError,
)

__all__ = ["Api", "api_options", "job_payload", "output_option", "print_json", "resolve_job"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

output_option = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    help="text for people; json for scripts (the OpenAPI's field names).",
)


@dataclass(frozen=True)
class Api:
    """Where and as whom the operator verbs call the OpenAPI."""

    url: str
    namespace: str
    group_id: str
    access_key_id: str | None
    access_key_secret: str | None
    timeout: float

    def client(self) -> OpenApiClient:
        return OpenApiClient(
            self.url,
            namespace=self.namespace,
            group_id=self.group_id,
            access_key_id=self.access_key_id,
            access_key_secret=self.access_key_secret,
            timeout=self.timeout,
        )

    def run(self, what: str, action: Callable[[OpenApiClient], Awaitable[T]]) -> T:
        """``action`` with a client; an OpenAPI error is a CliError saying what failed, with its code."""

        async def call() -> T:
            async with self.client() as client:
                return await action(client)

        try:
            return run_async(call())
        except ValueError as exc:  # a malformed URL, or a key given by half
            raise CliError(str(exc)) from exc
        except UnavailableError as exc:
            raise CliError(f"{what}: cannot reach {self.url}: {exc.message}", ExitCode.UNREACHABLE) from exc
        except AuthError as exc:
            raise CliError(
                f"{what}: the scheduler refused our credentials: {exc}", ExitCode.REJECTED
            ) from exc
        except NotFoundError as exc:
            raise CliError(f"{what}: {exc.message}", ExitCode.NOT_FOUND) from exc
        except InvalidRequestError as exc:
            raise CliError(f"{what}: {exc.message}", ExitCode.USAGE) from exc
        except OpenApiError as exc:
            raise CliError(f"{what} failed: {exc}", ExitCode.FAILED) from exc


def api_options(f: F) -> F:
    """Add the OpenAPI address, namespace, group, access key and timeout options; the command gets
    them as one ``api`` argument."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        key_id, secret = kwargs.pop("access_key_id"), kwargs.pop("access_key_secret")
        if (key_id is None) != (secret is None):
            raise CliError("give both --access-key-id and --access-key-secret, or neither")
        kwargs["api"] = Api(
            url=kwargs.pop("openapi_url"),
            namespace=kwargs.pop("namespace"),
            group_id=kwargs.pop("group_id"),
            access_key_id=key_id,
            access_key_secret=secret,
            timeout=kwargs.pop("timeout"),
        )
        return f(*args, **kwargs)

    decorated: Any = command
    for option in (
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, help="Seconds."),
        click.option("--access-key-secret", envvar="SX_ACCESS_KEY_SECRET", default=None),
        click.option("--access-key-id", envvar="SX_ACCESS_KEY_ID", default=None, help="Sign requests."),
        click.option("--group", "group_id", envvar="SX_GROUP_ID", default="default"),
        click.option("--namespace", envvar="SX_NAMESPACE", default="default"),
        openapi_option(legacy_server=True),
    ):
        decorated = option(decorated)
    return typing.cast(F, decorated)


async def resolve_job(client: OpenApiClient, job: str) -> int:
    """A job id from ``job``: an id as it is, or the name of one of the group's jobs."""
    if job.isdigit():
        return int(job)
    found = await client.find_job(job)
    if found is None:
        raise NotFoundError(f"no job named {job!r} in group {client.group_id!r} of {client.namespace!r}")
    return found.job_id


def job_payload(job: JobInfo) -> dict[str, Any]:
    """A job as GetJobInfo answers it: ``jobId``, ``status``, ``managed`` and the definition."""
    return {"jobId": job.job_id, "status": job.status, "managed": job.managed, **job.spec.to_create_params()}


def print_json(payload: BaseModel | Any) -> None:
    """``payload`` (a model of the client, or plain data) as indented JSON with the wire's names."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json", by_alias=True)
    click.echo(json.dumps(payload, indent=2, default=str, ensure_ascii=False))
