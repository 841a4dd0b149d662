"""The dispatch tests' kit: a protocol-level worker and a dispatcher set-up over real gRPC.

Every test runs a grpc.aio server on 127.0.0.1:0 with a `Dispatcher` over a SQLite `SqlStore`, and
drives time with a `ManualClock` (grace periods and heartbeat timeouts pass when the test says so).
``ProtocolWorker`` is a worker reduced to the wire protocol, written with the generated stubs. The
``setup`` fixture (conftest.py) gives each test a `Setup` with a store, a namespace, a group and a job.

Tests wait for the effect they assert: a status with ``Setup.wait_status``, what ``on_finished`` got
with ``Setup.wait_finished``, anything else with ``eventually``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc

from sx.processors import InstanceStatus, JobSpec, TimeType, TriggerType
from sx.protos import new_nonce, registration_proof
from sx.protos.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from sx.scheduler._clock import ManualClock
from sx.scheduler.dispatch import Dispatcher
from sx.scheduler.store import Instance, Job, NewInstance
from sx.scheduler.store.sql import SqlStore

__all__ = ["APP_KEY", "GROUP", "HEARTBEAT_TIMEOUT", "NS", "ProtocolWorker", "Setup", "eventually"]

NS = "ns"
GROUP = "g"
APP_KEY = "secret-key"
HEARTBEAT_TIMEOUT = 10.0

_delivery_ids = itertools.count(1)


async def eventually(check: Callable[[], Awaitable[bool] | bool], *, within: float = 30.0) -> None:
    """Poll ``check`` until it holds, failing after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


class ProtocolWorker:
    """A worker reduced to the wire protocol: registers, records what the scheduler sends, reports."""

    def __init__(
        self,
        target: str,
        *,
        worker_id: str,
        processors: tuple[str, ...] = ("demo",),
        app_key: str = APP_KEY,
        group_id: str = GROUP,
        namespace: str = NS,
        capacity: int = 0,
        accept: bool = True,
        refuse_message: str = "",
        reply: bool = True,
        takes_batches: bool = False,
    ) -> None:
        self.target = target
        self.worker_id = worker_id
        self.address = f"127.0.0.1:{40000 + abs(hash(worker_id)) % 20000}"
        self.processors = processors
        self.app_key = app_key
        self.group_id = group_id
        self.namespace = namespace
        self.capacity = capacity
        self.accept = accept
        self.refuse_message = refuse_message
        self.reply = reply
        self.takes_batches = takes_batches
        """Register says it reads batched messages (an older worker does not)."""
        self.batches: list[int] = []
        """The size of each batch message the scheduler sent."""
        self.submits: list[common_pb2.InstanceSpec] = []
        self.kills: list[scheduler_pb2.KillInstance] = []
        self.forgotten: list[int] = []
        """Instances whose task files the scheduler told this worker to remove."""
        self.acks: list[str] = []
        self.registered: scheduler_pb2.Registered | None = None
        self.exchange: (
            tuple[scheduler_pb2.WorkerMessage, scheduler_pb2.SchedulerMessage, scheduler_pb2.WorkerMessage]
            | None
        ) = None
        """The last registration as a listener on the wire saw it: Register, Challenge, ChallengeAnswer."""
        self.ended: grpc.aio.AioRpcError | None = None
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(
        self, *, running_instance_ids: tuple[int, ...] = (), task_file_instance_ids: tuple[int, ...] = ()
    ) -> scheduler_pb2.Registered:
        self._channel = grpc.aio.insecure_channel(self.target)
        stub = scheduler_pb2_grpc.SchedulerStub(self._channel)
        self._call = stub.Connect()
        self.ended = None
        register = scheduler_pb2.Register(
            namespace=self.namespace,
            group_id=self.group_id,
            worker_id=self.worker_id,
            address=self.address,
            processors=list(self.processors),
            capacity=self.capacity,
            version="test",
            running_instance_ids=list(running_instance_ids),
            task_file_instance_ids=list(task_file_instance_ids),
            client_nonce=new_nonce(),
            takes_batches=self.takes_batches,
        )
        sent = scheduler_pb2.WorkerMessage(register=register)
        await self._call.write(sent)
        challenge: scheduler_pb2.SchedulerMessage = await self._call.read()
        assert challenge.WhichOneof("body") == "challenge", challenge
        # An empty key answers with an empty proof, as the worker does.
        nonce = challenge.challenge.server_nonce
        proof = registration_proof(self.app_key, register, nonce) if self.app_key else b""
        answer = scheduler_pb2.WorkerMessage(answer=scheduler_pb2.ChallengeAnswer(proof=proof))
        self.exchange = (sent, challenge, answer)
        await self._call.write(answer)
        first: scheduler_pb2.SchedulerMessage = await self._call.read()
        assert first.WhichOneof("body") == "registered", first
        self.registered = first.registered
        self._reader = asyncio.create_task(self._read())
        return first.registered

    async def _read(self) -> None:
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    return
                if message.WhichOneof("body") == "batch":
                    self.batches.append(len(message.batch.messages))
                    for inner in message.batch.messages:
                        await self._on_message(inner)
                else:
                    await self._on_message(message)
        except grpc.aio.AioRpcError as exc:
            self.ended = exc

    async def _on_message(self, message: scheduler_pb2.SchedulerMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "submit":
            self.submits.append(message.submit.instance)
            if not self.reply:
                return
            await self._send(
                submit_reply=scheduler_pb2.SubmitReply(
                    instance_id=message.submit.instance.instance_id,
                    accepted=self.accept,
                    message=self.refuse_message,
                )
            )
        elif kind == "kill":
            self.kills.append(message.kill)
        elif kind == "forget_task_files":
            self.forgotten.extend(message.forget_task_files.instance_ids)
        elif kind == "ack":
            self.acks.append(message.ack.delivery_id)

    async def _send(self, **body: Any) -> None:
        await self._call.write(scheduler_pb2.WorkerMessage(**body))

    async def send_batch(self, *messages: scheduler_pb2.WorkerMessage) -> None:
        """Send ``messages`` as one batch (as a worker does once Registered says the scheduler reads them)."""
        await self._send(batch=scheduler_pb2.WorkerMessages(messages=list(messages)))

    async def report(
        self, instance_id: int, status: InstanceStatus, result: str = "", *, delivery_id: str | None = None
    ) -> str:
        delivery_id = delivery_id or f"{self.worker_id}-{next(_delivery_ids)}"
        await self._send(
            report=scheduler_pb2.InstanceReport(
                delivery_id=delivery_id, instance_id=instance_id, status=int(status), result=result
            )
        )
        return delivery_id

    async def report_running(self, instance_id: int) -> str:
        return await self.report(instance_id, InstanceStatus.RUNNING)

    async def heartbeat(self) -> None:
        await self._send(heartbeat=scheduler_pb2.Heartbeat(running=0, capacity=self.capacity))

    async def drop(self) -> None:
        """Break the stream the way a crashed or partitioned worker does."""
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


@dataclass
class Setup:
    store: SqlStore
    clock: ManualClock
    job: Job
    finished: list[tuple[Instance, bool]] = field(default_factory=list)
    dispatcher: Dispatcher | None = None
    server: grpc.aio.Server | None = None
    target: str = ""
    workers: list[ProtocolWorker] = field(default_factory=list)

    async def start_dispatcher(
        self, *, no_worker_grace: float = 30.0, batch_resume_wait: float = 30.0
    ) -> Dispatcher:
        async def on_finished(instance: Instance, system_failure: bool) -> None:
            self.finished.append((instance, system_failure))

        dispatcher = Dispatcher(
            self.store,
            clock=self.clock,
            on_finished=on_finished,
            heartbeat_interval=1.0,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            no_worker_grace=no_worker_grace,
            batch_resume_wait=batch_resume_wait,
            scheduler_id="test-scheduler",
        )
        server = grpc.aio.server()
        dispatcher.add_to_server(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await dispatcher.start()
        self.dispatcher, self.server, self.target = dispatcher, server, f"127.0.0.1:{port}"
        return dispatcher

    async def stop_dispatcher(self) -> None:
        for worker in self.workers:
            await worker.drop()
        self.workers.clear()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.server is not None:
            await self.server.stop(None)
        self.dispatcher = self.server = None

    async def worker(self, worker_id: str, **options: Any) -> ProtocolWorker:
        worker = ProtocolWorker(self.target, worker_id=worker_id, **options)
        self.workers.append(worker)
        await worker.connect()
        return worker

    async def add_job(self, name: str, **spec: Any) -> Job:
        return await self.store.create_job(
            namespace=NS,
            group_id=GROUP,
            spec=JobSpec(name=name, **spec),
            enabled=True,
            managed=False,
            next_fire_time=None,
        )

    async def new_instance(
        self, *, job: Job | None = None, delay: float = 0.0, status: InstanceStatus = InstanceStatus.WAITING
    ) -> Instance:
        when = self.clock.now() + timedelta(seconds=delay)
        return await self.store.create_instance(
            NewInstance(
                job_id=(job or self.job).id,
                namespace=NS,
                group_id=GROUP,
                status=status,
                trigger_type=TriggerType.API,
                time_type=TimeType.API,
                schedule_time=when,
                data_time=when,
            )
        )

    async def dispatch(self, **options: Any) -> Instance:
        instance = await self.new_instance(**options)
        assert self.dispatcher is not None
        await self.dispatcher.instance_created(instance)
        return instance

    async def advance_keeping(self, worker: ProtocolWorker, seconds: float) -> None:
        """Move the clock in steps shorter than the heartbeat timeout, the worker heartbeating each step."""
        assert self.dispatcher is not None
        dispatcher = self.dispatcher
        step = HEARTBEAT_TIMEOUT / 2
        while seconds > 0:
            await self.clock.advance(min(step, seconds))
            seconds -= step
            await worker.heartbeat()
            now = self.clock.now()
            await eventually(
                lambda now=now: any(  # type: ignore[misc]
                    w.last_seen == now for w in dispatcher.live_workers(NS, worker.group_id)
                )
            )

    async def status_of(self, instance_id: int) -> InstanceStatus:
        instance = await self.store.get_instance(instance_id)
        assert instance is not None
        return instance.status

    def finished_ids(self) -> list[tuple[int, bool]]:
        """What ``on_finished`` got so far: (instance id, system_failure) pairs."""
        return [(instance.id, system) for instance, system in self.finished]

    async def wait_finished(self, expected: list[tuple[int, bool]]) -> None:
        """Wait until ``on_finished`` got exactly these (instance id, system_failure) pairs."""
        await eventually(lambda: self.finished_ids() == expected)

    async def wait_status(self, instance_id: int, status: InstanceStatus) -> Instance:
        async def reached() -> bool:
            return await self.status_of(instance_id) is status

        await eventually(reached)
        instance = await self.store.get_instance(instance_id)
        assert instance is not None
        return instance
