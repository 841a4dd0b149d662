"""The dispatcher against real gRPC workers: a small protocol client written with the generated stubs.

Every test runs a grpc.aio server on 127.0.0.1:0 with a `Dispatcher` over a SQLite `SqlStore`, and
drives time with a `ManualClock` (grace periods and heartbeat timeouts pass when the test says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from sx.processors._enums import ExecuteMode, InstanceStatus, JobType, TimeType, TriggerType
from sx.processors._schedule import cron
from sx.processors._spec import JobSpec, MapOptions, MonitorOptions
from sx.protos.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from sx.scheduler._clock import ManualClock
from sx.scheduler.dispatch._dispatcher import Dispatcher, server_credentials
from sx.scheduler.dispatch._instance_spec import build_instance_spec
from sx.scheduler.store._store import Group, Instance, InstanceChange, Job, Namespace, NewInstance
from sx.scheduler.store.sql._store import SqlStore, sqlite_url

NS = "ns"
GROUP = "g"
APP_KEY = "secret-key"
HEARTBEAT_TIMEOUT = 10.0

_delivery_ids = itertools.count(1)


async def eventually(check: Callable[[], Awaitable[bool] | bool], *, within: float = 10.0) -> None:
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
        self.submits: list[common_pb2.InstanceSpec] = []
        self.kills: list[scheduler_pb2.KillInstance] = []
        self.acks: list[str] = []
        self.registered: scheduler_pb2.Registered | None = None
        self.ended: grpc.aio.AioRpcError | None = None
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, *, running_instance_ids: tuple[int, ...] = ()) -> scheduler_pb2.Registered:
        self._channel = grpc.aio.insecure_channel(self.target)
        stub = scheduler_pb2_grpc.SchedulerStub(self._channel)
        self._call = stub.Connect()
        self.ended = None
        await self._call.write(
            scheduler_pb2.WorkerMessage(
                register=scheduler_pb2.Register(
                    namespace=self.namespace,
                    group_id=self.group_id,
                    app_key=self.app_key,
                    worker_id=self.worker_id,
                    address=self.address,
                    processors=list(self.processors),
                    capacity=self.capacity,
                    version="test",
                    running_instance_ids=list(running_instance_ids),
                )
            )
        )
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
                kind = message.WhichOneof("body")
                if kind == "submit":
                    self.submits.append(message.submit.instance)
                    if not self.reply:
                        continue
                    await self._send(
                        submit_reply=scheduler_pb2.SubmitReply(
                            instance_id=message.submit.instance.instance_id,
                            accepted=self.accept,
                            message=self.refuse_message,
                        )
                    )
                elif kind == "kill":
                    self.kills.append(message.kill)
                elif kind == "ack":
                    self.acks.append(message.ack.delivery_id)
        except grpc.aio.AioRpcError as exc:
            self.ended = exc

    async def _send(self, **body: Any) -> None:
        await self._call.write(scheduler_pb2.WorkerMessage(**body))

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

    async def start_dispatcher(self, *, no_worker_grace: float = 30.0) -> Dispatcher:
        async def on_finished(instance: Instance, system_failure: bool) -> None:
            self.finished.append((instance, system_failure))

        dispatcher = Dispatcher(
            self.store,
            clock=self.clock,
            on_finished=on_finished,
            heartbeat_interval=1.0,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            no_worker_grace=no_worker_grace,
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

    async def wait_status(self, instance_id: int, status: InstanceStatus) -> Instance:
        async def reached() -> bool:
            return await self.status_of(instance_id) is status

        await eventually(reached)
        instance = await self.store.get_instance(instance_id)
        assert instance is not None
        return instance


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    store = SqlStore(sqlite_url(tmp_path))
    await store.start()
    await store.create_namespace(Namespace(id=NS, name="test namespace"))
    await store.create_group(Group(namespace=NS, group_id=GROUP, app_key=APP_KEY))
    job = await store.create_job(
        namespace=NS,
        group_id=GROUP,
        spec=JobSpec(name="demo-job", class_name="demo", parameters="p=1"),
        enabled=True,
        managed=False,
        next_fire_time=None,
    )
    state = Setup(store=store, clock=ManualClock(datetime.now(UTC)), job=job)
    try:
        yield state
    finally:
        await state.stop_dispatcher()
        await store.close()


# -- registration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app_key", "group_id", "expected"),
    [
        ("wrong", GROUP, "app key for group 'g' in namespace 'ns' is wrong"),
        ("", GROUP, "app key for group 'g' in namespace 'ns' is missing"),
        (APP_KEY, "nope", "group 'nope' in namespace 'ns' does not exist"),
    ],
)
async def test_registration_refused_names_the_group(
    setup: Setup, app_key: str, group_id: str, expected: str
) -> None:
    await setup.start_dispatcher()
    worker = ProtocolWorker(setup.target, worker_id="w1", app_key=app_key, group_id=group_id)
    setup.workers.append(worker)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await worker.connect()
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == expected
    assert setup.dispatcher is not None
    assert setup.dispatcher.live_workers(NS, GROUP) == []


async def test_registered_worker_is_live_with_scheduler_timings(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1", capacity=4)
    assert worker.registered is not None
    assert worker.registered.heartbeat_interval_ms == 1000
    assert worker.registered.heartbeat_timeout_ms == 10000
    assert worker.registered.scheduler_id == "test-scheduler"
    [info] = dispatcher.live_workers(NS, GROUP)
    assert (info.worker_id, info.address, info.capacity) == ("w1", worker.address, 4)
    assert info.processors == frozenset({"demo"})


# -- submit and reports ---------------------------------------------------------------------------


async def test_submit_reaches_worker_and_reports_finish_the_instance(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await eventually(lambda: len(worker.submits) == 1)
    spec = worker.submits[0]
    assert (spec.instance_id, spec.job_id, spec.processor) == (instance.id, setup.job.id, "demo")
    assert (spec.job_name, spec.parameters, spec.execute_mode) == ("demo-job", "p=1", "standalone")
    assert spec.schedule_time_ms == int(instance.schedule_time.timestamp() * 1000)
    assert (spec.namespace, spec.group_id) == (NS, GROUP)

    running = await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    assert (running.worker_id, running.worker_addr) == ("w1", worker.address)
    assert running.start_time is not None

    first = await worker.report(instance.id, InstanceStatus.RUNNING)
    last = await worker.report(instance.id, InstanceStatus.SUCCESS, "all done")
    await eventually(lambda: worker.acks == [first, last])
    done = await setup.wait_status(instance.id, InstanceStatus.SUCCESS)
    assert (done.result, done.worker_id, done.worker_addr) == ("all done", "w1", worker.address)
    assert done.end_time is not None
    assert [(i.id, i.status, system) for i, system in setup.finished] == [
        (instance.id, InstanceStatus.SUCCESS, False)
    ]


async def test_duplicate_delivery_and_late_final_change_nothing(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    delivery = await worker.report(instance.id, InstanceStatus.SUCCESS, "first")
    await eventually(lambda: worker.acks == [delivery])
    # The same delivery again (its ack was lost), then a different final for a finished instance.
    await worker.report(instance.id, InstanceStatus.FAILED, "replayed", delivery_id=delivery)
    late = await worker.report(instance.id, InstanceStatus.FAILED, "late")
    await eventually(lambda: worker.acks == [delivery, delivery, late])
    done = await setup.store.get_instance(instance.id)
    assert done is not None
    assert (done.status, done.result) == (InstanceStatus.SUCCESS, "first")
    assert len(setup.finished) == 1


async def test_round_robin_across_workers(setup: Setup) -> None:
    await setup.start_dispatcher()
    first = await setup.worker("w1")
    second = await setup.worker("w2")
    for _ in range(4):
        await setup.dispatch()
    await eventually(lambda: len(first.submits) + len(second.submits) == 4)
    assert (len(first.submits), len(second.submits)) == (2, 2)


async def test_worker_without_the_processor_is_skipped(setup: Setup) -> None:
    await setup.start_dispatcher()
    other = await setup.worker("w-other", processors=("something_else",))
    serving = await setup.worker("w-demo")
    for _ in range(3):
        await setup.dispatch()
    await eventually(lambda: len(serving.submits) == 3)
    assert other.submits == []
    # A script job needs no processor: any worker of the group runs it.
    script = await setup.add_job("script", job_type=JobType.SHELL, content="echo hi")
    for _ in range(2):
        await setup.dispatch(job=script)
    await eventually(lambda: len(other.submits) == 1 and len(serving.submits) == 4)
    assert other.submits[0].content == "echo hi"


async def test_worker_at_capacity_gets_more_once_one_finishes(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1", capacity=1)
    one = await setup.dispatch()
    two = await setup.dispatch()
    await eventually(lambda: len(worker.submits) == 1)
    assert worker.submits[0].instance_id == one.id
    assert await setup.status_of(two.id) is InstanceStatus.WAITING
    await worker.report(one.id, InstanceStatus.SUCCESS, "ok")
    await eventually(lambda: len(worker.submits) == 2)
    assert worker.submits[1].instance_id == two.id


async def test_broadcast_submit_lists_the_group_workers(setup: Setup) -> None:
    await setup.start_dispatcher()
    first = await setup.worker("w1")
    second = await setup.worker("w2")
    await setup.worker("w3", processors=("other",))
    job = await setup.add_job("bc", class_name="demo", execute_mode=ExecuteMode.BROADCAST)
    await setup.dispatch(job=job)
    await eventually(lambda: len(first.submits) + len(second.submits) == 1)
    [spec] = first.submits + second.submits
    assert spec.execute_mode == "broadcast"
    assert sorted((w.worker_id, w.address) for w in spec.workers) == sorted(
        [("w1", first.address), ("w2", second.address)]
    )


async def test_refused_submit_fails_when_no_other_worker_takes_it(setup: Setup) -> None:
    await setup.start_dispatcher()
    await setup.worker("w1", accept=False, refuse_message="processor demo is not registered here")
    instance = await setup.dispatch()
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == "refused by every worker: w1: processor demo is not registered here"


async def test_refused_submit_goes_to_another_worker(setup: Setup) -> None:
    await setup.start_dispatcher()
    refusing = await setup.worker("w1", accept=False, refuse_message="busy")
    accepting = await setup.worker("w2")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    assert [s.instance_id for s in accepting.submits] == [instance.id]
    assert [s.instance_id for s in refusing.submits] == [instance.id]


# -- waiting --------------------------------------------------------------------------------------


async def test_no_worker_fails_after_the_grace(setup: Setup) -> None:
    await setup.start_dispatcher(no_worker_grace=5)
    instance = await setup.dispatch()
    await setup.clock.advance(4)
    assert await setup.status_of(instance.id) is InstanceStatus.WAITING
    await setup.clock.advance(2)
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == "no worker online in group g of namespace ns"
    assert [(i.id, system) for i, system in setup.finished] == [(instance.id, False)]


async def test_worker_arriving_within_the_grace_gets_the_instance(setup: Setup) -> None:
    await setup.start_dispatcher(no_worker_grace=5)
    instance = await setup.dispatch()
    await setup.clock.advance(3)
    worker = await setup.worker("w1")
    await eventually(lambda: [s.instance_id for s in worker.submits] == [instance.id])


async def test_delayed_instance_waits_for_its_schedule_time(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1")
    later = await setup.new_instance(delay=60)
    now = await setup.new_instance()
    assert setup.dispatcher is not None
    await setup.dispatcher.instance_created(later)
    await setup.dispatcher.instance_created(now)
    # The pass that submitted the due instance saw the delayed one too and left it waiting.
    await eventually(lambda: [s.instance_id for s in worker.submits] == [now.id])
    assert await setup.status_of(later.id) is InstanceStatus.WAITING
    await setup.advance_keeping(worker, 61)
    await eventually(lambda: [s.instance_id for s in worker.submits] == [now.id, later.id])


# -- kill -----------------------------------------------------------------------------------------


async def test_stop_instance_sends_kill_to_its_worker(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    assert await dispatcher.stop_instance(instance, "stopped by test") is True
    await eventually(lambda: len(worker.kills) == 1)
    kill = worker.kills[0]
    assert (kill.instance_id, kill.job_id, kill.reason) == (instance.id, setup.job.id, "stopped by test")
    await worker.report(instance.id, InstanceStatus.FAILED, "killed: stopped by test")
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == "killed: stopped by test"
    assert await dispatcher.stop_instance(failed, "again") is False


async def test_stop_waiting_instance_fails_it_at_once(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    instance = await setup.dispatch(delay=60)
    assert await dispatcher.stop_instance(instance, "not needed") is True
    failed = await setup.store.get_instance(instance.id)
    assert failed is not None
    assert (failed.status, failed.result) == (InstanceStatus.FAILED, "killed: not needed")
    assert [(i.id, system) for i, system in setup.finished] == [(instance.id, False)]
    assert await dispatcher.stop_instance(failed, "again") is False


# -- worker loss ----------------------------------------------------------------------------------


async def test_dropped_stream_fails_running_instance_as_lost(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    await worker.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])
    # The worker gets one heartbeat timeout to come back for it.
    assert await setup.status_of(instance.id) is InstanceStatus.RUNNING
    await setup.clock.advance(HEARTBEAT_TIMEOUT + 1)
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == f"worker w1 ({worker.address}) lost"
    assert [(i.id, system) for i, system in setup.finished] == [(instance.id, True)]


async def test_reconnecting_worker_keeps_its_instance_and_resends_its_report(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    await worker.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])
    await worker.connect(running_instance_ids=(instance.id,))
    await setup.advance_keeping(worker, HEARTBEAT_TIMEOUT + 1)
    assert await setup.status_of(instance.id) is InstanceStatus.RUNNING
    delivery = await worker.report(instance.id, InstanceStatus.SUCCESS, "finished while away")
    await eventually(lambda: delivery in worker.acks)
    done = await setup.wait_status(instance.id, InstanceStatus.SUCCESS)
    assert done.result == "finished while away"
    assert [(i.id, system) for i, system in setup.finished] == [(instance.id, False)]


async def test_instance_never_accepted_by_a_lost_worker_is_submitted_again(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    mute = await setup.worker("w-mute", reply=False)
    instance = await setup.dispatch()
    await eventually(lambda: len(mute.submits) == 1)
    submitted = await setup.wait_status(instance.id, InstanceStatus.READY)
    assert submitted.worker_id == "w-mute"
    await mute.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])
    await setup.clock.advance(HEARTBEAT_TIMEOUT + 1)
    await setup.wait_status(instance.id, InstanceStatus.WAITING)
    other = await setup.worker("w2")
    await eventually(lambda: [s.instance_id for s in other.submits] == [instance.id])
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    assert setup.finished == []


async def test_silent_worker_is_dropped_and_its_instance_lost(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    worker = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    await setup.clock.advance(HEARTBEAT_TIMEOUT + 1)
    failed = await setup.wait_status(instance.id, InstanceStatus.FAILED)
    assert failed.result == f"worker w1 ({worker.address}) lost"
    assert dispatcher.live_workers(NS, GROUP) == []
    await eventually(lambda: worker.ended is not None)
    assert worker.ended is not None
    assert worker.ended.code() is grpc.StatusCode.UNAVAILABLE
    assert [(i.id, system) for i, system in setup.finished] == [(instance.id, True)]


# -- restart recovery -----------------------------------------------------------------------------


async def test_restarted_dispatcher_dispatches_waiting_and_reclaims_running(setup: Setup) -> None:
    await setup.start_dispatcher()
    await setup.stop_dispatcher()
    # What a stopped scheduler left in the store.
    waiting = await setup.new_instance()
    running = await setup.new_instance(status=InstanceStatus.RUNNING)
    orphan = await setup.new_instance(status=InstanceStatus.RUNNING)
    await setup.store.update_instance(running.id, InstanceChange(worker_id="w1", worker_addr="old:1"))
    await setup.store.update_instance(orphan.id, InstanceChange(worker_id="w-gone", worker_addr="gone:1"))

    await setup.start_dispatcher()
    worker = ProtocolWorker(setup.target, worker_id="w1")
    setup.workers.append(worker)
    await worker.connect(running_instance_ids=(running.id,))
    await eventually(lambda: [s.instance_id for s in worker.submits] == [waiting.id])
    await setup.wait_status(waiting.id, InstanceStatus.RUNNING)

    await setup.advance_keeping(worker, HEARTBEAT_TIMEOUT + 1)
    lost = await setup.wait_status(orphan.id, InstanceStatus.FAILED)
    assert lost.result == "worker w-gone (gone:1) lost"
    assert (orphan.id, True) in [(i.id, system) for i, system in setup.finished]
    assert await setup.status_of(running.id) is InstanceStatus.RUNNING
    await worker.report(running.id, InstanceStatus.SUCCESS, "survived the restart")
    done = await setup.wait_status(running.id, InstanceStatus.SUCCESS)
    assert done.worker_addr == worker.address


async def test_worker_told_to_kill_an_instance_that_already_finished(setup: Setup) -> None:
    await setup.start_dispatcher()
    finished = await setup.new_instance(status=InstanceStatus.FAILED)
    worker = ProtocolWorker(setup.target, worker_id="w1")
    setup.workers.append(worker)
    await worker.connect(running_instance_ids=(finished.id,))
    await eventually(lambda: [k.instance_id for k in worker.kills] == [finished.id])


async def test_instance_spec_carries_job_and_instance_fields(setup: Setup) -> None:
    job = await setup.add_job(
        "full",
        class_name="demo",
        max_attempt=3,
        schedule=cron("0 0 * * * ?"),
        map=MapOptions(page_size=7, task_max_attempt=2, task_attempt_interval=9),
        monitor=MonitorOptions(timeout=120, timeout_kill_enable=True),
    )
    instance = await setup.new_instance(job=job)
    spec = build_instance_spec(job, instance, workers=[("w1", "h:1")])
    assert (spec.max_attempt, spec.time_expression, spec.timeout_kill_s) == (3, "0 0 * * * ?", 120)
    assert (spec.map_options.page_size, spec.map_options.task_max_attempt) == (7, 2)
    assert spec.map_options.task_attempt_interval_s == 9
    assert (spec.trigger_type, spec.time_type) == (int(TriggerType.API), int(TimeType.API))
    assert spec.data_time_ms == int(instance.data_time.timestamp() * 1000)
    assert [(w.worker_id, w.address) for w in spec.workers] == [("w1", "h:1")]
    assert build_instance_spec(setup.job, instance).timeout_kill_s == 0


def test_server_credentials_need_a_certificate_and_key() -> None:
    with pytest.raises(ValueError, match="cert=''"):
        server_credentials(cert=b"", key=b"k", client_ca=None)
    with pytest.raises(ValueError, match="key=''"):
        server_credentials(cert=b"c", key=b"", client_ca=None)


def test_bad_timings_are_refused(tmp_path: Path) -> None:
    async def nothing(instance: Instance, system_failure: bool) -> None:
        return None

    store = SqlStore(sqlite_url(tmp_path))
    with pytest.raises(ValueError, match="heartbeat_timeout=1"):
        Dispatcher(store, clock=ManualClock(), on_finished=nothing, heartbeat_interval=3, heartbeat_timeout=1)
    with pytest.raises(ValueError, match="no_worker_grace=-1"):
        Dispatcher(store, clock=ManualClock(), on_finished=nothing, no_worker_grace=-1)


# -- ownership: namespace, group and the instance's current worker --------------------------------


async def test_worker_of_another_namespace_cannot_take_over_or_finish_an_instance(setup: Setup) -> None:
    await setup.store.create_namespace(Namespace(id="other", name="another namespace"))
    await setup.store.create_group(Group(namespace="other", group_id=GROUP, app_key=APP_KEY))
    await setup.start_dispatcher()
    instance = await setup.dispatch()  # no worker of its group yet: it waits
    intruder = ProtocolWorker(setup.target, worker_id="w-other", namespace="other")
    setup.workers.append(intruder)
    await intruder.connect(running_instance_ids=(instance.id,))
    await eventually(lambda: [k.instance_id for k in intruder.kills] == [instance.id])
    running = await intruder.report_running(instance.id)
    final = await intruder.report(instance.id, InstanceStatus.SUCCESS, "not mine to finish")
    await eventually(lambda: {running, final} <= set(intruder.acks))
    assert [k.instance_id for k in intruder.kills] == [instance.id, instance.id]
    untouched = await setup.store.get_instance(instance.id)
    assert untouched is not None
    assert (untouched.status, untouched.worker_id, untouched.result) == (InstanceStatus.WAITING, "", "")
    assert intruder.submits == [] and setup.finished == []
    # Its own group's worker still gets it.
    worker = await setup.worker("w1")
    await eventually(lambda: [s.instance_id for s in worker.submits] == [instance.id])
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)


async def test_final_report_from_a_worker_no_longer_holding_the_instance_is_ignored(setup: Setup) -> None:
    await setup.start_dispatcher()
    first = await setup.worker("w1")
    instance = await setup.dispatch()
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
    second = await setup.worker("w2")
    # w2 says it runs the instance (e.g. a master resumed there): it holds it from now on.
    delivery = await second.report_running(instance.id)
    await eventually(lambda: delivery in second.acks)
    assert (await setup.wait_status(instance.id, InstanceStatus.RUNNING)).worker_id == "w2"
    late = await first.report(instance.id, InstanceStatus.FAILED, "late word of the old master")
    await eventually(lambda: late in first.acks)
    assert [k.instance_id for k in first.kills] == [instance.id]
    assert await setup.status_of(instance.id) is InstanceStatus.RUNNING
    assert setup.finished == []
    await second.report(instance.id, InstanceStatus.SUCCESS, "done by the holder")
    done = await setup.wait_status(instance.id, InstanceStatus.SUCCESS)
    assert (done.worker_id, done.result) == ("w2", "done by the holder")


# -- bookkeeping ----------------------------------------------------------------------------------


def _held_ids(dispatcher: Dispatcher) -> set[int]:
    """Every instance id the dispatcher keeps a per-instance record of."""
    held = set(dispatcher._waiting) | set(dispatcher._owner) | set(dispatcher._refused)
    held |= set(dispatcher._resumes)
    for orphans in dispatcher._orphans.values():
        held |= set(orphans.assigned)
    for session in dispatcher._registry.sessions():
        held |= set(session.assigned)
    return held


async def test_dispatcher_keeps_nothing_of_finished_instances(setup: Setup) -> None:
    dispatcher = await setup.start_dispatcher()
    batch = await setup.add_job("batch-job", class_name="demo", execute_mode=ExecuteMode.BATCH)
    master = await setup.worker("w-master")
    resumed = await setup.dispatch(job=batch)
    await setup.wait_status(resumed.id, InstanceStatus.RUNNING)
    await master.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])
    await setup.clock.advance(HEARTBEAT_TIMEOUT + 1)
    await setup.wait_status(resumed.id, InstanceStatus.WAITING)  # submitted again as a resume
    assert dispatcher._resumes == {resumed.id: 1}
    assert await dispatcher.stop_instance(resumed, "not needed any more") is True
    await setup.wait_status(resumed.id, InstanceStatus.FAILED)

    refuser = await setup.worker("w-refuse", accept=False, refuse_message="busy")
    refused = await setup.dispatch()
    await setup.wait_status(refused.id, InstanceStatus.FAILED)
    await refuser.drop()
    await eventually(lambda: dispatcher.live_workers(NS, GROUP) == [])

    worker = await setup.worker("w1")
    succeeded = await setup.dispatch()
    await setup.wait_status(succeeded.id, InstanceStatus.RUNNING)
    await worker.report(succeeded.id, InstanceStatus.SUCCESS, "ok")
    await setup.wait_status(succeeded.id, InstanceStatus.SUCCESS)
    killed = await setup.dispatch(delay=3600)
    assert await dispatcher.stop_instance(killed, "not needed") is True
    await setup.wait_status(killed.id, InstanceStatus.FAILED)

    finished = {resumed.id, refused.id, succeeded.id, killed.id}
    assert _held_ids(dispatcher) & finished == set()


# -- WAITING instances dispatch never heard of ------------------------------------------------------


async def test_waiting_instance_created_behind_the_dispatchers_back_is_dispatched(setup: Setup) -> None:
    await setup.start_dispatcher()
    worker = await setup.worker("w1")
    # Created in the store, but whoever made it failed to hand it to dispatch.
    instance = await setup.new_instance()
    await setup.advance_keeping(worker, 5)
    assert worker.submits == []
    await setup.advance_keeping(worker, 25)
    await eventually(lambda: [s.instance_id for s in worker.submits] == [instance.id])
    await setup.wait_status(instance.id, InstanceStatus.RUNNING)
