"""A real OpenAPI server for the API tests: uvicorn on 127.0.0.1:0 over a SqlStore in a temp dir.

Each API test module makes its fixture from ``running_api``. The hooks object records what the
service asked of the (not yet existing) trigger engine and dispatcher, and the instances it announced
as finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import uvicorn

from sx.protos import sign_request
from sx.scheduler._clock import ManualClock
from sx.scheduler.api import Authenticator, Services, create_app
from sx.scheduler.jobs import InstanceEvents, JobService
from sx.scheduler.store import Instance
from sx.scheduler.store.sql import SqlStore, sqlite_url

START = datetime(2030, 1, 1, tzinfo=UTC)
CRON_JOB: dict[str, Any] = {
    "name": "nightly",
    "jobType": "python",
    "className": "app.jobs:Nightly",
    "executeMode": "standalone",
    "timeType": 1,
    "timeExpression": "0 0 2 * * ?",
}
API_JOB: dict[str, Any] = {
    "name": "on-demand",
    "jobType": "python",
    "className": "app.jobs:OnDemand",
    "executeMode": "standalone",
    "timeType": 100,
}


class RecordingHooks:
    """SchedulerHooks that record calls, and a listener of finished instances (``finished``);
    ``stop_result`` is what stop_instance answers."""

    def __init__(self) -> None:
        self.wakes = 0
        self.created: list[Instance] = []
        self.stopped: list[tuple[Instance, str]] = []
        self.finished: list[Instance] = []
        self.stop_result = False

    def wake_triggers(self) -> None:
        self.wakes += 1

    async def instance_created(self, instance: Instance) -> None:
        self.created.append(instance)

    async def stop_instance(self, instance: Instance, reason: str) -> bool:
        self.stopped.append((instance, reason))
        return self.stop_result

    async def instance_finished(self, instance: Instance, system_failure: bool) -> None:
        self.finished.append(instance)


class AcsAuth(httpx.Auth):
    """Signs each request with ACS3-HMAC-SHA256, as a client of the OpenAPI does."""

    requires_request_body = True

    def __init__(self, key_id: str, secret: str, clock: ManualClock, *, nonce: str | None = None) -> None:
        self.key_id, self.secret, self.clock, self.nonce = key_id, secret, clock, nonce

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = {"host": request.headers["host"]}
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        request.headers.update(
            sign_request(
                request.method,
                str(request.url),
                headers,
                request.content,
                self.key_id,
                self.secret,
                self.clock.now(),
                self.nonce or uuid.uuid4().hex,
            )
        )
        yield request


@dataclass
class Api:
    client: httpx.AsyncClient
    service: JobService
    store: SqlStore
    hooks: RecordingHooks
    clock: ManualClock
    base_url: str
    auth: httpx.Auth | None = field(default=None)

    async def call(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        style: str = "form",
        method: str = "POST",
        auth: httpx.Auth | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Send parameters in ``style`` (query, form or json); returns (HTTP status, envelope)."""
        params = params or {}
        kwargs: dict[str, Any] = {}
        if style == "query" or method == "GET":
            kwargs["params"] = {k: _text(v) for k, v in params.items()}
        elif style == "form":
            kwargs["data"] = {k: _text(v) for k, v in params.items()}
        else:
            kwargs["json"] = params
        chosen = auth or self.auth
        if chosen is not None:
            kwargs["auth"] = chosen
        response = await self.client.request(method, path, **kwargs)
        body = response.json()
        assert set(body) == {"code", "success", "message", "requestId", "data"}, body
        assert response.headers["x-request-id"] == body["requestId"]
        assert response.status_code == body["code"]
        assert body["success"] is (body["code"] == 200)
        return response.status_code, body

    async def ok(self, path: str, **params: Any) -> Any:
        status, body = await self.call(path, params)
        assert status == 200, body
        return body["data"]

    async def error(self, path: str, expected: int, **params: Any) -> str:
        status, body = await self.call(path, params)
        assert status == expected, body
        assert body["data"] is None
        message: str = body["message"]
        return message

    async def setup(self, namespace: str = "ns1", group: str = "g1") -> None:
        await self.ok("/openapi/v1/namespace/create", namespace=namespace)
        await self.ok("/openapi/v1/group/create", namespace=namespace, groupId=group)

    async def create_job(self, namespace: str = "ns1", group: str = "g1", **fields: Any) -> int:
        job_id: int = await self.ok(
            "/openapi/v1/job/create", namespace=namespace, groupId=group, **{**API_JOB, **fields}
        )
        return job_id


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@contextlib.asynccontextmanager
async def running_api(
    tmp_path: Path, *, default_tz: str = "UTC", store_url: str | None = None
) -> AsyncIterator[Api]:
    """Store (SQLite in ``tmp_path`` unless ``store_url``), service, app and a uvicorn server on
    127.0.0.1:0, torn down on exit."""
    store = SqlStore(store_url or sqlite_url(tmp_path))
    await store.start()
    clock = ManualClock(START)
    hooks = RecordingHooks()
    events = InstanceEvents()
    events.on_finished(hooks.instance_finished)
    service = JobService(
        store, clock=clock, default_tz=ZoneInfo(default_tz), hooks=hooks, events=events, history_keep=300
    )
    config = uvicorn.Config(
        create_app(Services.jobs_only(store, service), auth=Authenticator(store, clock=clock)),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ws="none",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            yield Api(client, service, store, hooks, clock, base_url)
    finally:
        server.should_exit = True
        await task
        await store.close()
