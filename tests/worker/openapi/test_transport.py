"""The client over an injected httpx transport (the real scheduler's ASGI app, no socket), and how
often it tries: counted at a real TCP server that hangs up, and at a transport in front of a port that
refuses connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sx.processors import JobSpec
from sx.scheduler import SchedulerServer
from sx.scheduler.api import create_app
from sx.worker.openapi import AuthError, NotFoundError, OpenApiClient, UnavailableError
from sx.worker.testing import LocalScheduler
from tests.worker.openapi.test_client import GROUP, NS, client_for, full_spec


class Counting(httpx.AsyncBaseTransport):
    """Records each request's path, then hands it to the real transport."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SchedulerServer]:
    async with LocalScheduler(tmp_path, namespace=NS, group_id=GROUP, start_worker=False) as local:
        assert local.server is not None
        yield local.server


def asgi_client(server: SchedulerServer, **options: Any) -> tuple[OpenApiClient, Counting]:
    """A client whose requests go straight into the scheduler's ASGI app (the host is never resolved)."""
    app = create_app(server.services, auth=server.auth)
    transport = Counting(httpx.ASGITransport(app=app))
    return client_for("http://scheduler.test", transport=transport, **options), transport


async def test_calls_through_an_asgi_transport(server: SchedulerServer) -> None:
    client, transport = asgi_client(server)
    async with client:
        spec = full_spec()
        job_id = await client.create_job(spec, managed=True)
        info = await client.get_job(job_id)
        assert info.spec == spec and info.managed
        assert [job.job_id for job in await client.all_jobs()] == [job_id]
        with pytest.raises(NotFoundError) as missing:
            await client.get_job(job_id + 1)
        assert missing.value.request_id and missing.value.field == "jobId"
    # One request per call: a 404 is an answer, not something to retry.
    assert transport.paths == [
        "/openapi/v1/job/create",
        "/openapi/v1/job/get",
        "/openapi/v1/job/list",
        "/openapi/v1/job/get",
    ]


async def test_signed_calls_through_an_asgi_transport(server: SchedulerServer) -> None:
    client, _ = asgi_client(server)
    async with client:
        key = await client.create_access_key()
        assert key.access_key_secret is not None
        with pytest.raises(AuthError):
            await client.list_jobs()
    signed, _ = asgi_client(server, access_key_id=key.access_key_id, access_key_secret=key.access_key_secret)
    async with signed:
        job_id = await signed.create_job(JobSpec(name="signed", class_name="a:B"))
        assert (await signed.get_job(job_id)).name == "signed"


@contextlib.asynccontextmanager
async def hanging_up() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TCP server that reads each request's head, then closes without answering: the request
    reached it, so only an idempotent call may be sent again. Yields its URL and the heads it read."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield f"http://127.0.0.1:{port}", heads


Call = Callable[[OpenApiClient], Awaitable[object]]

IDEMPOTENT: dict[str, Call] = {
    "group/get": lambda c: c.get_group(),
    "job/update": lambda c: c.update_job(1, {"maxAttempt": 2}),
    "job/delete": lambda c: c.delete_job(1),
    "instance/tasks": lambda c: c.list_instance_tasks(1, 1),
}
NOT_IDEMPOTENT: dict[str, Call] = {
    "job/create": lambda c: c.create_job(JobSpec(name="x", class_name="a:B")),
    "job/execute": lambda c: c.execute_job(1),
    "workflow/create": lambda c: c.create_workflow({"name": "w", "nodes": [1]}),
    "instance/retryTasks": lambda c: c.retry_instance_tasks(1, 1, [2]),
}


@pytest.mark.parametrize("retries", [0, 3])
@pytest.mark.parametrize("path", sorted(IDEMPOTENT))
async def test_a_dropped_connection_is_retried_for_idempotent_calls(path: str, retries: int) -> None:
    async with hanging_up() as (url, heads), client_for(url, retries=retries) as client:
        with pytest.raises(UnavailableError):
            await IDEMPOTENT[path](client)
    assert len(heads) == retries + 1
    assert all(head.startswith(f"POST /openapi/v1/{path} ".encode()) for head in heads)


@pytest.mark.parametrize("path", sorted(NOT_IDEMPOTENT))
async def test_a_dropped_connection_is_never_retried_for_other_calls(path: str) -> None:
    async with hanging_up() as (url, heads), client_for(url, retries=3) as client:
        with pytest.raises(UnavailableError):
            await NOT_IDEMPOTENT[path](client)
    assert len(heads) == 1 and heads[0].startswith(f"POST /openapi/v1/{path} ".encode())


@pytest.mark.parametrize("path", ["group/get", "job/create"])
async def test_a_refused_connection_is_tried_again(path: str) -> None:
    """No connection means the request cannot have arrived: repeating even a create is safe."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        transport = Counting(httpx.AsyncHTTPTransport())
        async with client_for(url, retries=2, transport=transport) as client:
            with pytest.raises(UnavailableError, match="cannot connect"):
                await {**IDEMPOTENT, **NOT_IDEMPOTENT}[path](client)
    assert transport.paths == [f"/openapi/v1/{path}"] * 3
