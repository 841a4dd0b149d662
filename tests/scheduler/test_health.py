"""Readiness of a real scheduler: ``/health/ready`` and the gRPC health service follow its store and
its loops, and come back when they do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sx.scheduler import SchedulerServer, SchedulerSettings
from tests.postgres import PostgresServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEADLINE = 30.0


async def grpc_status(server: SchedulerServer, service: str = "") -> int:
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
        return int(reply.status)


async def until_grpc(server: SchedulerServer, status: int) -> None:
    """Poll the gRPC health service until it answers ``status`` (the watcher publishes it)."""
    deadline = time.monotonic() + DEADLINE
    while await grpc_status(server) != status:
        assert time.monotonic() < deadline, f"gRPC health never turned {status}"
        await asyncio.sleep(0.05)
    assert await grpc_status(server, "sx.v1.Scheduler") == status


async def ready(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/health/ready")


async def until_ready_is(http: httpx.AsyncClient, code: int) -> httpx.Response:
    """Poll ``/health/ready`` until it answers ``code`` (a terminated backend ends a moment later)."""
    deadline = time.monotonic() + DEADLINE
    while (response := await ready(http)).status_code != code:
        assert time.monotonic() < deadline, f"/health/ready never answered {code}: {response.text}"
        await asyncio.sleep(0.05)
    return response


@pytest.fixture
async def sqlite_server(tmp_path: Path) -> AsyncIterator[SchedulerServer]:
    async with SchedulerServer(SchedulerSettings(data_dir=tmp_path, http_port=0, grpc_port=0)) as server:
        yield server


async def test_ready_and_live_on_a_running_scheduler(sqlite_server: SchedulerServer) -> None:
    async with httpx.AsyncClient(base_url=sqlite_server.http_url) as http:
        response = await ready(http)
        assert response.status_code == 200
        assert response.json()["data"] == {"status": "ready"}
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/health")).json()["data"] == {"status": "ok"}
    assert await grpc_status(sqlite_server) == SERVING


async def test_a_stopped_loop_is_not_ready_until_it_runs_again(sqlite_server: SchedulerServer) -> None:
    async with httpx.AsyncClient(base_url=sqlite_server.http_url) as http:
        await sqlite_server.engine.stop()
        response = await ready(http)
        assert response.status_code == 503
        assert response.json()["message"] == "not ready: not running: trigger engine"
        assert response.json()["success"] is False
        await until_grpc(sqlite_server, NOT_SERVING)
        # Liveness says the process answers, whatever its parts do.
        assert (await http.get("/health/live")).status_code == 200

        await sqlite_server.engine.start()
        assert (await ready(http)).status_code == 200
        await until_grpc(sqlite_server, SERVING)


@pytest.mark.postgres
async def test_an_unreachable_store_is_not_ready_until_it_is_back(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    database = url.rsplit("/", 1)[1]
    admin_dsn = postgres_server.url.set(drivername="postgresql").render_as_string(hide_password=False)
    settings = SchedulerSettings(database_url=url, data_dir=tmp_path, http_port=0, grpc_port=0)
    admin = await asyncpg.connect(admin_dsn)
    try:
        async with SchedulerServer(settings) as server, httpx.AsyncClient(base_url=server.http_url) as http:
            assert (await ready(http)).status_code == 200
            # Break the store for real: no new connection is allowed, and the open ones are ended.
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
            )
            response = await until_ready_is(http, 503)
            assert response.json()["message"].startswith("not ready: store unreachable: "), response.text
            await until_grpc(server, NOT_SERVING)

            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            assert (await ready(http)).status_code == 200
            await until_grpc(server, SERVING)
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
