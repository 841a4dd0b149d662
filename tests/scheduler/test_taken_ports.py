"""A scheduler refuses a port another scheduler holds, naming the address (gRPC's SO_REUSEPORT
default let a second one bind it, and workers were split between the two)."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sx.scheduler import SchedulerServer, SchedulerSettings, SchedulerStartError


async def test_a_second_scheduler_on_a_taken_grpc_port_is_refused(tmp_path: Path) -> None:
    first_settings = SchedulerSettings(data_dir=tmp_path / "first", http_port=0, grpc_port=0)
    async with SchedulerServer(first_settings) as first:
        port = int(first.grpc_address.rsplit(":", 1)[1])
        second = SchedulerServer(SchedulerSettings(data_dir=tmp_path / "second", http_port=0, grpc_port=port))
        with pytest.raises(SchedulerStartError, match=rf"cannot listen for gRPC on 127\.0\.0\.1:{port}: "):
            await second.start()
        await second.stop()
        # The first one still answers on its port.
        async with grpc.aio.insecure_channel(first.grpc_address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="sx.v1.Scheduler"), timeout=30
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_taken_http_port_is_named(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = SchedulerServer(SchedulerSettings(data_dir=tmp_path, http_port=port, grpc_port=0))
        with pytest.raises(SchedulerStartError, match=rf"OpenAPI on 127\.0\.0\.1:{port}: .*SX_HTTP_PORT"):
            await server.start()
        await server.stop()
