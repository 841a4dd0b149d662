"""The dispatcher with the real `Worker` runtime in the same process, over gRPC on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from sx.processors import (
    BroadcastProcessor,
    ExecuteMode,
    InstanceStatus,
    JobContext,
    JobSpec,
    Processor,
    Registry,
    TimeType,
    TriggerType,
    processor,
)
from sx.scheduler._clock import RealClock
from sx.scheduler.dispatch import Dispatcher
from sx.scheduler.store import Group, Instance, Job, Namespace, NewInstance
from sx.scheduler.store.sql import SqlStore, sqlite_url
from sx.worker import Worker, WorkerRejected, WorkerSettings
from tests.scheduler.dispatch.test_harness import eventually

NS = "ns"
GROUP = "g"
APP_KEY = "worker-key"

registry = Registry()


@processor(name="dw.echo", registry=registry)
class Echo(Processor):
    def process(self, ctx: JobContext) -> str:
        return f"echo {ctx.job_parameters} {ctx.instance_parameters}"


@processor(name="dw.forever", registry=registry)
class Forever(Processor):
    async def process(self, ctx: JobContext) -> str:
        await asyncio.sleep(3600)
        return "never"


@processor(name="dw.broadcast", registry=registry)
class Shards(BroadcastProcessor):
    def process(self, ctx: JobContext) -> str:
        return f"{ctx.sharding_id}/{ctx.sharding_num}"

    def post_process(self, ctx: JobContext) -> str:
        return ",".join(ctx.task_results[k] for k in sorted(ctx.task_results))


class Harness:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.finished: list[tuple[Instance, bool]] = []

        async def on_finished(instance: Instance, system_failure: bool) -> None:
            self.finished.append((instance, system_failure))

        self.dispatcher = Dispatcher(
            store, clock=RealClock(), on_finished=on_finished, heartbeat_interval=1.0, heartbeat_timeout=10.0
        )
        self.server = grpc.aio.server()
        self.dispatcher.add_to_server(self.server)
        self.target = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    def settings(self, **fields: Any) -> WorkerSettings:
        values: dict[str, Any] = {
            "server": self.target,
            "namespace": NS,
            "group_id": GROUP,
            "app_key": APP_KEY,
        }
        values.update(fields)
        return WorkerSettings(**values)

    async def job(self, name: str, **spec: Any) -> Job:
        return await self.store.create_job(
            namespace=NS,
            group_id=GROUP,
            spec=JobSpec(name=name, **spec),
            enabled=True,
            managed=False,
            next_fire_time=None,
        )

    async def run(self, job: Job, parameters: str = "") -> Instance:
        now = datetime.now(UTC)
        instance = await self.store.create_instance(
            NewInstance(
                job_id=job.id,
                namespace=NS,
                group_id=GROUP,
                status=InstanceStatus.WAITING,
                trigger_type=TriggerType.API,
                time_type=TimeType.API,
                schedule_time=now,
                data_time=now,
                instance_parameters=parameters,
            )
        )
        await self.dispatcher.instance_created(instance)
        return instance

    async def finished_instance(self, instance_id: int) -> Instance:
        async def done() -> bool:
            current = await self.store.get_instance(instance_id)
            return current is not None and current.status.finished

        await eventually(done, within=20)
        instance = await self.store.get_instance(instance_id)
        assert instance is not None
        return instance


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = SqlStore(sqlite_url(tmp_path))
    await store.start()
    await store.create_namespace(Namespace(id=NS, name=NS))
    await store.create_group(Group(namespace=NS, group_id=GROUP, app_key=APP_KEY))
    state = Harness(store)
    await state.server.start()
    await state.dispatcher.start()
    try:
        yield state
    finally:
        await state.dispatcher.stop()
        await state.server.stop(None)
        await store.close()


async def test_worker_runs_a_standalone_instance(harness: Harness) -> None:
    job = await harness.job("echo", class_name="dw.echo", parameters="jp")
    async with Worker(harness.settings(worker_id="w1"), registry=registry) as worker:
        await asyncio.wait_for(worker.connected.wait(), 20)
        instance = await harness.run(job, "ip")
        done = await harness.finished_instance(instance.id)
    assert (done.status, done.result) == (InstanceStatus.SUCCESS, "echo jp ip")
    assert (done.worker_id, done.worker_addr) == ("w1", worker.address)
    await eventually(lambda: [(i.id, system) for i, system in harness.finished] == [(instance.id, False)])


async def test_broadcast_runs_on_every_worker(harness: Harness) -> None:
    job = await harness.job("shards", class_name="dw.broadcast", execute_mode=ExecuteMode.BROADCAST)
    async with (
        Worker(harness.settings(worker_id="w1"), registry=registry) as first,
        Worker(harness.settings(worker_id="w2"), registry=registry) as second,
    ):
        await asyncio.wait_for(first.connected.wait(), 20)
        await asyncio.wait_for(second.connected.wait(), 20)
        await eventually(lambda: len(harness.dispatcher.live_workers(NS, GROUP)) == 2)
        instance = await harness.run(job)
        done = await harness.finished_instance(instance.id)
    assert (done.status, done.result) == (InstanceStatus.SUCCESS, "0/2,1/2")


async def test_stop_instance_kills_it_on_the_worker(harness: Harness) -> None:
    job = await harness.job("forever", class_name="dw.forever")
    async with Worker(harness.settings(worker_id="w1"), registry=registry) as worker:
        await asyncio.wait_for(worker.connected.wait(), 20)
        instance = await harness.run(job)

        async def running() -> bool:
            current = await harness.store.get_instance(instance.id)
            return current is not None and current.status is InstanceStatus.RUNNING

        await eventually(running)
        assert await harness.dispatcher.stop_instance(instance, "enough") is True
        done = await harness.finished_instance(instance.id)
    assert done.status is InstanceStatus.FAILED
    assert done.result == "killed: enough"


async def test_worker_with_a_wrong_app_key_is_rejected(harness: Harness) -> None:
    worker = Worker(harness.settings(worker_id="w1", app_key="nope"), registry=registry)
    with pytest.raises(WorkerRejected, match="app key for group 'g' in namespace 'ns' is wrong"):
        await asyncio.wait_for(worker.run(), 20)
