"""``LocalScheduler(manual_clock=True)``: cron, retries, timeouts and second_delay tested without waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sx.processors import (
    InstanceStatus,
    JobContext,
    Processor,
    Registry,
    cron,
    next_fire_times,
    processor,
    second_delay,
)
from sx.worker.testing import LocalScheduler
from tests.e2e.conftest import eventually

registry = Registry()
START = datetime(2030, 3, 1, 12, 0, 0, tzinfo=UTC)


@processor(name="clock.daily", schedule=cron("0 0 2 * * ?"), time_zone="Asia/Shanghai", registry=registry)
class Daily(Processor):
    def process(self, ctx: JobContext) -> str:
        return ctx.schedule_time.isoformat()


@processor(
    name="clock.flaky",
    schedule=cron("0 0 3 * * ?"),
    time_zone="UTC",
    max_attempt=2,
    attempt_interval=3600,
    registry=registry,
)
class Flaky(Processor):
    def process(self, ctx: JobContext) -> str:
        if ctx.attempt == 0:
            raise RuntimeError("the first attempt fails")
        return f"attempt {ctx.attempt}"


@processor(name="clock.slow", timeout=600, timeout_enable=True, timeout_kill_enable=True, registry=registry)
class Slow(Processor):
    async def process(self, ctx: JobContext) -> str:
        await asyncio.wait_for(ctx.wait_cancelled(), timeout=60)
        return "stopped"


@processor(name="clock.delay", schedule=second_delay(30), registry=registry)
class Delayed(Processor):
    def process(self, ctx: JobContext) -> str:
        return "ran"


@pytest.fixture
async def sched(tmp_path: Path) -> AsyncIterator[LocalScheduler]:
    async with LocalScheduler(tmp_path, registry=registry, manual_clock=True, start_time=START) as local:
        yield local


async def test_the_clock_stands_still_until_moved(sched: LocalScheduler) -> None:
    assert sched.now() == START
    await sched.advance(90)
    assert sched.now() == datetime(2030, 3, 1, 12, 1, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="before the clock"):
        await sched.set_time(START)


async def test_a_daily_cron_job_runs_at_its_fire_times(sched: LocalScheduler) -> None:
    await sched.job_id(Daily)
    expected = next_fire_times("0 0 2 * * ?", "Asia/Shanghai", 2, after=START)
    await sched.set_time(expected[0])
    (first,) = await sched.wait_instances(Daily, 1)
    assert first.ok and datetime.fromisoformat(first.result) == expected[0]
    await sched.set_time(expected[1])
    runs = await sched.wait_instances(Daily, 2)
    assert [datetime.fromisoformat(run.result) for run in runs] == expected


async def test_a_retry_waits_for_its_interval_on_the_clock(sched: LocalScheduler) -> None:
    await sched.job_id(Flaky)
    (fire,) = next_fire_times("0 0 3 * * ?", "UTC", 1, after=START)
    await sched.set_time(fire)
    (failed,) = await sched.wait_instances(Flaky, 1)
    assert failed.status is InstanceStatus.FAILED and "first attempt fails" in failed.result

    async def retry_waiting() -> bool:
        return any(not run.status.finished for run in await sched.instances(Flaky))

    await eventually(retry_waiting, what="the retry to be planned")
    # An hour of scheduler time is one call: the retry runs now, not after a real hour.
    await sched.advance(3600)
    retried = await sched.wait_instances(Flaky, 2)
    assert retried[-1].ok and retried[-1].result == "attempt 1"


async def test_a_timeout_kills_the_instance_when_the_clock_passes_it(sched: LocalScheduler) -> None:
    instance_id = await sched.start_job(Slow)
    job_id = await sched.job_id(Slow)

    async def running() -> bool:
        return (await sched.client.get_instance(job_id, instance_id)).status is InstanceStatus.RUNNING

    await eventually(running, what=f"instance {instance_id} to run")
    await sched.advance(601)
    outcome = await sched.wait_instance(job_id, instance_id)
    assert outcome.status is InstanceStatus.FAILED


async def test_second_delay_runs_again_once_the_delay_passed(sched: LocalScheduler) -> None:
    await sched.job_id(Delayed)
    await sched.advance(30)
    (first,) = await sched.wait_instances(Delayed, 1)
    assert first.ok
    # The next run is planned from the end of this one (on the clock, which stood still meanwhile).
    await sched.advance(30)
    assert len(await sched.wait_instances(Delayed, 2)) == 2


async def test_real_time_kits_refuse_to_move_time(tmp_path: Path) -> None:
    local = LocalScheduler(tmp_path, registry=registry)
    with pytest.raises(RuntimeError, match="manual_clock=True"):
        await local.advance(1)
    with pytest.raises(ValueError, match="start_time"):
        LocalScheduler(tmp_path, start_time=START)
