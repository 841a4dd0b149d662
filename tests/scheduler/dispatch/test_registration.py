"""Registration is challenge-response: the app key never travels, and what a listener records of one
registration does not register anyone else."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from sx.processors import Registry
from sx.protos import new_nonce, registration_proof
from sx.protos.v1 import scheduler_pb2, scheduler_pb2_grpc
from sx.worker import Worker, WorkerSettings
from tests.scheduler.dispatch.test_harness import APP_KEY, GROUP, NS, Setup, eventually

WRONG = "app key for group 'g' in namespace 'ns' is wrong"


class Stream:
    """One Connect stream driven message by message, as an attacker with a recording would."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._call = scheduler_pb2_grpc.SchedulerStub(self._channel).Connect()

    async def send(self, message: scheduler_pb2.WorkerMessage) -> None:
        await self._call.write(message)

    async def receive(self) -> scheduler_pb2.SchedulerMessage:
        message: scheduler_pb2.SchedulerMessage = await self._call.read()
        return message

    async def refusal(self) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await self._call.read()
        return refused.value

    async def close(self) -> None:
        self._call.cancel()
        await self._channel.close()


async def test_a_recorded_registration_replayed_on_a_new_stream_is_refused(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1")
    assert worker.exchange is not None
    register, challenge, answer = worker.exchange
    await worker.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])

    replay = Stream(setup.target)
    try:
        await replay.send(register)
        fresh = await replay.receive()
        assert fresh.challenge.server_nonce != challenge.challenge.server_nonce
        await replay.send(answer)
        refused = await replay.refusal()
    finally:
        await replay.close()
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
    assert refused.details() == WRONG
    assert dispatcher.live_workers(NS, GROUP) == []


async def test_an_answer_cannot_carry_a_changed_register(setup: Setup) -> None:
    # A relay in the middle forwards the scheduler's challenge to the real worker and its answer back,
    # but registers its own address: the answer covers the whole Register the worker signed.
    dispatcher = await setup.start_dispatcher()
    genuine = scheduler_pb2.Register(
        namespace=NS, group_id=GROUP, worker_id="w1", address="10.0.0.1:7000", client_nonce=new_nonce()
    )
    forged = scheduler_pb2.Register()
    forged.CopyFrom(genuine)
    forged.address = "10.6.6.6:7000"
    relay = Stream(setup.target)
    try:
        await relay.send(scheduler_pb2.WorkerMessage(register=forged))
        challenge = await relay.receive()
        # What the real worker answers for the challenge it is shown (it signs its own Register).
        proof = registration_proof(APP_KEY, genuine, challenge.challenge.server_nonce)
        await relay.send(scheduler_pb2.WorkerMessage(answer=scheduler_pb2.ChallengeAnswer(proof=proof)))
        refused = await relay.refusal()
    finally:
        await relay.close()
    assert (refused.code(), refused.details()) == (grpc.StatusCode.UNAUTHENTICATED, WRONG)
    assert dispatcher.live_workers(NS, GROUP) == []


async def test_a_worker_that_sends_its_key_in_clear_is_told_to_upgrade(setup: Setup) -> None:
    await setup.start_dispatcher()
    register = scheduler_pb2.Register(namespace=NS, group_id=GROUP, worker_id="old", address="h:1")
    # Field 3 is how an older worker sent the app key; it has no client nonce.
    key = APP_KEY.encode()
    old = scheduler_pb2.Register.FromString(register.SerializeToString() + b"\x1a" + bytes([len(key)]) + key)
    stream = Stream(setup.target)
    try:
        await stream.send(scheduler_pb2.WorkerMessage(register=old))
        refused = await stream.refusal()
    finally:
        await stream.close()
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "register.client_nonce is empty: the worker predates challenge-response" in (
        refused.details() or ""
    )


async def test_the_answer_must_follow_the_challenge(setup: Setup) -> None:
    await setup.start_dispatcher()
    register = scheduler_pb2.Register(
        namespace=NS, group_id=GROUP, worker_id="w1", address="h:1", client_nonce=new_nonce()
    )
    stream = Stream(setup.target)
    try:
        await stream.send(scheduler_pb2.WorkerMessage(register=register))
        await stream.receive()
        await stream.send(scheduler_pb2.WorkerMessage(heartbeat=scheduler_pb2.Heartbeat()))
        refused = await stream.refusal()
    finally:
        await stream.close()
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "the answer to the challenge must be answer, got heartbeat"


class Tap:
    """A TCP relay that keeps every byte each side sends: what a listener on a network without TLS gets."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self.from_client = bytearray()
        self.from_server = bytearray()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        for pipe in (
            self._pipe(reader, up_writer, self.from_client),
            self._pipe(up_reader, writer, self.from_server),
        ):
            task = asyncio.create_task(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, copy: bytearray) -> None:
        try:
            while data := await source.read(65536):
                copy.extend(data)
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_real_worker_registers_without_sending_the_app_key(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    tap = Tap(setup.target)
    target = await tap.start()
    settings = WorkerSettings(server=target, namespace=NS, group_id=GROUP, app_key=APP_KEY, worker_id="w-tap")
    try:
        async with Worker(settings, registry=Registry()) as worker:
            await asyncio.wait_for(worker.connected.wait(), 20)
            assert [w.worker_id for w in dispatcher.live_workers(NS, GROUP)] == ["w-tap"]
    finally:
        await tap.stop()
    sent = bytes(tap.from_client)
    # The recording shows the Register's fields in clear (no TLS here) ...
    assert b"w-tap" in sent and settings.namespace.encode() in sent
    # ... and not the key, raw or hex-encoded, in either direction.
    key = APP_KEY.encode()
    for spelling in (key, key.hex().encode()):
        assert spelling not in sent and spelling not in tap.from_server
