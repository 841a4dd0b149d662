"""The in-process test kit (``sx.worker.testing.LocalScheduler``): a real scheduler and worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.processors import (
    BroadcastProcessor,
    InstanceStatus,
    JobContext,
    Processor,
    ProcessResult,
    Registry,
    processor,
)
from sx.worker.testing import InstanceFailedError, LocalScheduler
from tests.e2e.conftest import DEADLINE, eventually

registry = Registry()


@processor(name="kit.echo", parameters="from-the-job", registry=registry)
class Echo(Processor):
    def process(self, ctx: JobContext) -> object:
        return {"job": ctx.job_parameters, "instance": ctx.get_instance_parameters()}


@processor(name="kit.fail", registry=registry)
class Fail(Processor):
    async def process(self, ctx: JobContext) -> ProcessResult:
        return ProcessResult.failure(f"refused {ctx.instance_parameters}")


@processor(name="kit.wait", registry=registry)
class WaitForStop(Processor):
    async def process(self, ctx: JobContext) -> str:
        await asyncio.wait_for(ctx.wait_cancelled(), timeout=60)
        return "stopped"


@processor(name="kit.broadcast", registry=registry)
class Shards(BroadcastProcessor):
    def process(self, ctx: JobContext) -> str:
        return f"shard {ctx.sharding_id}/{ctx.sharding_num}"

    def post_process(self, ctx: JobContext) -> str:
        return ",".join(ctx.task_results[k] for k in sorted(ctx.task_results))


@pytest.fixture
async def sched(tmp_path: Path) -> AsyncIterator[LocalScheduler]:
    async with LocalScheduler(tmp_path, registry=registry) as local:
        yield local


async def test_run_job_passes_parameters_and_returns_the_result(sched: LocalScheduler) -> None:
    outcome = await sched.run_job(Echo, instance_parameters="from-the-call")
    assert outcome.ok, outcome
    assert json.loads(outcome.result) == {"job": "from-the-job", "instance": "from-the-call"}
    assert outcome.detail.trigger_type == 3  # API
    # By name too, and the job is synced only once.
    again = await sched.run_job("kit.echo")
    assert again.ok and again.job_id == outcome.job_id and again.instance_id != outcome.instance_id
    jobs = await sched.client.all_jobs()
    assert [job.name for job in jobs] == ["kit.echo"]


async def test_a_failed_instance_is_returned_and_raise_for_status_raises(sched: LocalScheduler) -> None:
    outcome = await sched.run_job(Fail, instance_parameters="x")
    assert outcome.status is InstanceStatus.FAILED
    assert outcome.result == "refused x"
    with pytest.raises(InstanceFailedError, match="refused x") as caught:
        outcome.raise_for_status()
    assert caught.value.outcome is outcome


async def test_join_raises_the_first_failure_with_fail_fast(sched: LocalScheduler) -> None:
    await sched.start_job(Echo, "a")
    failing = await sched.start_job(Fail, "b")
    with pytest.raises(InstanceFailedError) as caught:
        await sched.join()
    assert caught.value.outcome.instance_id == failing


async def test_join_without_fail_fast_returns_every_outcome(sched: LocalScheduler) -> None:
    first = await sched.start_job(Echo, "a")
    second = await sched.start_job(Fail, "b")
    outcomes = await sched.join(fail_fast=False)
    assert [(o.instance_id, o.status) for o in outcomes] == [
        (first, InstanceStatus.SUCCESS),
        (second, InstanceStatus.FAILED),
    ]
    assert await sched.join() == []  # nothing started since


async def test_stop_instance_kills_a_running_instance(sched: LocalScheduler) -> None:
    instance_id = await sched.start_job(WaitForStop)
    job_id = await sched.job_id(WaitForStop)

    async def running() -> bool:
        return (await sched.client.get_instance(job_id, instance_id)).status is InstanceStatus.RUNNING

    await eventually(running, what=f"instance {instance_id} to run")
    await sched.stop_instance(instance_id)
    outcome = await sched.wait_instance(job_id, instance_id, timeout=DEADLINE)
    assert outcome.status is InstanceStatus.FAILED
    assert outcome.result.startswith("killed")


async def test_broadcast_runs_on_the_one_worker(sched: LocalScheduler) -> None:
    outcome = (await sched.run_job(Shards)).raise_for_status()
    assert outcome.result == "shard 0/1"


async def test_wait_instance_times_out_naming_the_instance(sched: LocalScheduler) -> None:
    instance_id = await sched.start_job(WaitForStop)
    job_id = await sched.job_id(WaitForStop)
    with pytest.raises(TimeoutError, match=f"instance {instance_id} of job {job_id} is still"):
        await sched.wait_instance(job_id, instance_id, timeout=0.1)
    await sched.stop_instance(instance_id)
    await sched.join(fail_fast=False)


async def test_unknown_names_and_unstarted_kits_are_clear_errors(tmp_path: Path) -> None:
    local = LocalScheduler(tmp_path, registry=registry)
    with pytest.raises(RuntimeError, match="not started"):
        _ = local.client
    async with local:
        with pytest.raises(Exception, match=r"'kit\.nope' is not registered"):
            await local.run_job("kit.nope")
        with pytest.raises(KeyError, match="instance_id=12345"):
            await local.stop_instance(12345)
    assert local.server is None and local.worker is None
