"""The gRPC adapter (`_servicer`): registration's first message, batched messages both ways (and one by
one to a worker that does not take batches); and the server's TLS credentials."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from sx.processors import InstanceStatus
from sx.protos import BATCH_BYTES, BATCH_MESSAGES, take_batch
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.scheduler.dispatch import server_credentials
from sx.scheduler.dispatch._registry import WorkerSession
from sx.scheduler.dispatch._state import kill_message
from tests.scheduler.dispatch.test_harness import GROUP, NS, Setup, eventually


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


def _session_of(setup: Setup, worker_id: str) -> WorkerSession:
    assert setup.dispatcher is not None
    return next(s for s in setup.dispatcher._state.registry.sessions() if s.worker_id == worker_id)


@pytest.mark.parametrize("takes_batches", [True, False])
async def test_messages_queued_together_go_as_one_batch_to_a_worker_that_takes_them(
    setup: Setup, takes_batches: bool
) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1", takes_batches=takes_batches)
    assert worker.registered is not None and worker.registered.takes_batches
    session = _session_of(setup, "w1")
    for instance_id in (11, 12, 13):  # queued in one go: the stream's writer finds all three
        session.send(kill_message(instance_id, setup.job.id, "test"))
    await eventually(lambda: len(worker.kills) == 3)
    assert [kill.instance_id for kill in worker.kills] == [11, 12, 13]
    # An older worker, whose Register does not say it takes batches, gets them one by one.
    assert worker.batches == ([3] if takes_batches else [])


async def test_a_workers_batch_is_read_in_order(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1", takes_batches=True)
    instance = await setup.dispatch()
    await eventually(lambda: len(worker.submits) == 1)
    reports = [
        scheduler_pb2.WorkerMessage(
            report=scheduler_pb2.InstanceReport(
                delivery_id=delivery_id, instance_id=instance.id, status=int(status)
            )
        )
        for delivery_id, status in (("d1", InstanceStatus.RUNNING), ("d2", InstanceStatus.SUCCESS))
    ]
    await worker.send_batch(*reports)
    await setup.wait_status(instance.id, InstanceStatus.SUCCESS)
    await eventually(lambda: sorted(worker.acks) == ["d1", "d2"])


async def test_a_batch_is_bounded_and_leaves_what_goes_alone_for_later() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    heartbeat = scheduler_pb2.WorkerMessage(heartbeat=scheduler_pb2.Heartbeat())
    logs = scheduler_pb2.WorkerMessage(log_batch=scheduler_pb2.LogBatch(messages=["x"], times_ms=[1]))
    for _ in range(BATCH_MESSAGES + 5):
        queue.put_nowait(heartbeat)
    batch, left = take_batch(queue, heartbeat, alone=frozenset({"log_batch"}))
    assert (len(batch), left, queue.qsize()) == (BATCH_MESSAGES, [], 6)
    # A message that goes alone stops the batch and is handed back; so is a sentinel.
    queue = asyncio.Queue()
    for item in (heartbeat, logs, heartbeat):
        queue.put_nowait(item)
    assert take_batch(queue, heartbeat, alone=frozenset({"log_batch"})) == ([heartbeat, heartbeat], [logs])
    assert take_batch(queue, logs, alone=frozenset({"log_batch"})) == ([logs], [])
    queue.put_nowait(None)
    assert take_batch(queue, heartbeat, alone=frozenset()) == ([heartbeat, heartbeat], [None])
    # Large messages: the batch ends past the one that crosses the size bound.
    big = scheduler_pb2.WorkerMessage(
        log_batch=scheduler_pb2.LogBatch(messages=["y" * (BATCH_BYTES // 2)], times_ms=[1])
    )
    queue = asyncio.Queue()
    for _ in range(4):
        queue.put_nowait(big)
    batch, left = take_batch(queue, big, alone=frozenset())
    assert (len(batch), left, queue.qsize()) == (2, [], 3)
