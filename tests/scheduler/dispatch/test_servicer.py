"""The gRPC adapter (`_servicer`) and the server's TLS credentials."""

from __future__ import annotations

import grpc
import pytest

from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.scheduler.dispatch import server_credentials
from tests.scheduler.dispatch.test_harness import GROUP, NS, Setup


def test_server_credentials_need_a_certificate_and_key() -> None:
    with pytest.raises(ValueError, match="cert=''"):
        server_credentials(cert=b"", key=b"k", client_ca=None)
    with pytest.raises(ValueError, match="key=''"):
        server_credentials(cert=b"c", key=b"", client_ca=None)


async def test_a_stream_must_start_with_register(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    async with grpc.aio.insecure_channel(setup.target) as channel:
        call = scheduler_pb2_grpc.SchedulerStub(channel).Connect()
        await call.write(scheduler_pb2.WorkerMessage(heartbeat=scheduler_pb2.Heartbeat()))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "the first message must be register, got heartbeat"
    assert dispatcher.live_workers(NS, GROUP) == []
