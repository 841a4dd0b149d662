"""Retries, second_delay re-arming, fail and timeout alarms, kills and history retention."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from sx.processors import (
    InstanceStatus,
    JobSpec,
    MonitorOptions,
    TimeType,
    TriggerType,
    api,
    fixed_rate,
    second_delay,
)
from sx.scheduler._clock import ManualClock
from sx.scheduler.jobs._alarms import AlarmRouter, LogChannel
from sx.scheduler.jobs._lifecycle import Lifecycle
from sx.scheduler.jobs._triggers import TriggerEngine
from sx.scheduler.store import Instance, InstanceChange, Job, NewInstance, Store
from tests.scheduler.jobs.test_triggers import GROUP, NS, T0, add_job, all_instances, eventually, prepare


@dataclass
class Setup:
    store: Store
    clock: ManualClock
    lifecycle: Lifecycle
    engine: TriggerEngine
    created: list[Instance] = field(default_factory=list)
    killed: list[tuple[int, str]] = field(default_factory=list)

    async def run(self, job: Job, *, started: datetime | None = None) -> Instance:
        """An instance of the job, running since ``started`` (as a worker would report)."""
        made = await self.store.create_instance(
            NewInstance(
                job_id=job.id,
                namespace=NS,
                group_id=GROUP,
                status=InstanceStatus.WAITING,
                trigger_type=TriggerType.SCHEDULED,
                time_type=job.spec.schedule.time_type,
                schedule_time=self.clock.now(),
                data_time=self.clock.now(),
            )
        )
        running = await self.store.update_instance(
            made.id, InstanceChange(status=InstanceStatus.RUNNING, start_time=started or self.clock.now())
        )
        assert running is not None
        return running

    async def finish(self, instance: Instance, status: InstanceStatus, result: str = "") -> Instance:
        done = await self.store.update_instance(
            instance.id, InstanceChange(status=status, end_time=self.clock.now(), result=result)
        )
        assert done is not None
        return done


@pytest.fixture
async def setup(store: Store) -> AsyncIterator[Setup]:
    await prepare(store)
    clock = ManualClock(T0)
    created: list[Instance] = []
    killed: list[tuple[int, str]] = []

    async def on_created(instances: list[Instance]) -> None:
        created.extend(instances)

    async def stop_instance(instance: Instance, reason: str) -> None:
        killed.append((instance.id, reason))
        await store.update_instance(
            instance.id,
            InstanceChange(status=InstanceStatus.FAILED, end_time=clock.now(), result=reason),
            only_if_status=[InstanceStatus.RUNNING],
        )

    engine = TriggerEngine(store, clock=clock, default_tz=UTC, on_created=on_created, idle_poll=3600)
    alarms = AlarmRouter({"log": LogChannel()}, store)
    lifecycle = Lifecycle(
        store,
        clock=clock,
        default_tz=UTC,
        engine=engine,
        alarms=alarms,
        on_created=on_created,
        history_keep=3,
        stop_instance=stop_instance,
    )
    yield Setup(store, clock, lifecycle, engine, created, killed)
    await lifecycle.stop()
    await engine.stop()


async def test_failed_instance_is_retried_with_interval_and_attempt(setup: Setup) -> None:
    job = await add_job(
        setup.store,
        setup.clock,
        JobSpec(class_name="demo:Noop", name="r", schedule=api(), max_attempt=2, attempt_interval=30),
    )
    first = await setup.finish(await setup.run(job), InstanceStatus.FAILED, "boom")
    retry = await setup.lifecycle.instance_finished(first)
    assert retry is not None
    assert (retry.attempt, retry.retry_of, retry.status) == (1, first.id, InstanceStatus.WAITING)
    assert retry.schedule_time == T0 + timedelta(seconds=30)
    assert retry.trigger_type == TriggerType.SCHEDULED
    assert retry.data_time == first.data_time
    assert setup.created == [retry]

    # Reported twice (a duplicate report, or another replica): still one retry.
    assert await setup.lifecycle.instance_finished(first) is None
    assert len([i for i in await all_instances(setup.store, job.id) if i.retry_of == first.id]) == 1

    second_run = await setup.store.update_instance(
        retry.id, InstanceChange(status=InstanceStatus.FAILED, end_time=setup.clock.now(), result="again")
    )
    assert second_run is not None
    second = await setup.lifecycle.instance_finished(second_run, system_failure=True)
    assert second is not None and second.attempt == 2 and second.trigger_type == TriggerType.SYSTEM_RETRY

    last = await setup.store.update_instance(second.id, InstanceChange(status=InstanceStatus.FAILED))
    assert last is not None
    assert await setup.lifecycle.instance_finished(last) is None  # maxAttempt reached


async def test_success_and_rejection_are_not_retried(setup: Setup) -> None:
    job = await add_job(
        setup.store, setup.clock, JobSpec(class_name="demo:Noop", name="ok", schedule=api(), max_attempt=3)
    )
    done = await setup.finish(await setup.run(job), InstanceStatus.SUCCESS)
    assert await setup.lifecycle.instance_finished(done) is None
    rejected = await setup.finish(await setup.run(job), InstanceStatus.REJECTED, "rejected")
    assert await setup.lifecycle.instance_finished(rejected) is None


async def test_a_stopped_instance_is_not_retried(setup: Setup) -> None:
    job = await add_job(
        setup.store, setup.clock, JobSpec(class_name="demo:Noop", name="k", schedule=api(), max_attempt=3)
    )
    for result in ("killed", "killed: by the operator"):
        stopped = await setup.finish(await setup.run(job), InstanceStatus.FAILED, result)
        assert await setup.lifecycle.instance_finished(stopped) is None
    # A failure that only mentions killing is an ordinary failure and is retried.
    failed = await setup.finish(await setup.run(job), InstanceStatus.FAILED, "killed the wrong process")
    assert await setup.lifecycle.instance_finished(failed) is not None


async def test_unfinished_instance_is_refused(setup: Setup) -> None:
    job = await add_job(setup.store, setup.clock, JobSpec(class_name="demo:Noop", name="u", schedule=api()))
    with pytest.raises(ValueError, match="status=3"):
        await setup.lifecycle.instance_finished(await setup.run(job))


async def test_fail_alarm_only_when_no_retry_follows(setup: Setup) -> None:
    spec = JobSpec(
        class_name="demo:Noop",
        name="alarmed",
        schedule=api(),
        max_attempt=1,
        monitor=MonitorOptions(fail_enable=True, send_channel="log"),
    )
    job = await add_job(setup.store, setup.clock, spec)
    first = await setup.finish(await setup.run(job), InstanceStatus.FAILED, "boom")
    retry = await setup.lifecycle.instance_finished(first)
    assert retry is not None
    assert await setup.store.list_alarms(job_id=job.id) == []
    final = await setup.store.update_instance(
        retry.id, InstanceChange(status=InstanceStatus.FAILED, result="x")
    )
    assert final is not None
    await setup.lifecycle.instance_finished(final)
    (alarm,) = await setup.store.list_alarms(job_id=job.id)
    assert alarm.kind == "failure" and alarm.instance_id == retry.id and alarm.delivered


async def test_second_delay_rearms_after_end_and_fires_again(setup: Setup) -> None:
    job = await add_job(
        setup.store, setup.clock, JobSpec(class_name="demo:Noop", name="sd", schedule=second_delay(5))
    )
    await setup.engine.start()
    await setup.clock.advance(5)
    await eventually(lambda: len(setup.created) == 1)
    first = setup.created[0]
    assert first.time_type == TimeType.SECOND_DELAY
    await setup.store.update_instance(
        first.id, InstanceChange(status=InstanceStatus.RUNNING, start_time=setup.clock.now())
    )
    await setup.clock.advance(20)  # runs for 20 s; nothing else fires meanwhile
    ended = await setup.finish(first, InstanceStatus.SUCCESS)
    await setup.lifecycle.instance_finished(ended)
    rearmed = await setup.store.get_job(job.id)
    assert rearmed is not None and rearmed.next_fire_time == T0 + timedelta(seconds=30)
    assert len(setup.created) == 1
    await setup.clock.advance(5)
    await eventually(lambda: len(setup.created) == 2)
    assert setup.created[1].schedule_time == T0 + timedelta(seconds=30)


async def test_history_is_pruned(setup: Setup) -> None:
    job = await add_job(setup.store, setup.clock, JobSpec(class_name="demo:Noop", name="h", schedule=api()))
    for _ in range(6):
        await setup.lifecycle.instance_finished(
            await setup.finish(await setup.run(job), InstanceStatus.SUCCESS)
        )
    assert len(await all_instances(setup.store, job.id)) == 3


async def test_timeout_alarms_once_and_kills(setup: Setup) -> None:
    watch = MonitorOptions(timeout_enable=True, timeout=60, send_channel="log")
    kill = MonitorOptions(timeout_enable=True, timeout=60, timeout_kill_enable=True, send_channel="log")
    watched = await add_job(
        setup.store,
        setup.clock,
        JobSpec(class_name="demo:Noop", name="watched", schedule=fixed_rate(3600), monitor=watch),
    )
    killed = await add_job(
        setup.store,
        setup.clock,
        JobSpec(class_name="demo:Noop", name="killed", schedule=fixed_rate(3600), monitor=kill),
    )
    quiet = await add_job(
        setup.store, setup.clock, JobSpec(class_name="demo:Noop", name="quiet", schedule=fixed_rate(3600))
    )
    a, b, c = await setup.run(watched), await setup.run(killed), await setup.run(quiet)

    await setup.clock.advance(59)
    assert await setup.lifecycle.check_timeouts() == 0
    await setup.clock.advance(2)
    assert await setup.lifecycle.check_timeouts() == 2
    assert await setup.lifecycle.check_timeouts() == 1  # the killed one is no longer running
    assert [k[0] for k in setup.killed] == [b.id]
    assert "timeout" in setup.killed[0][1]

    alarms = await setup.store.list_alarms(limit=100)
    assert sorted((x.job_id, x.kind) for x in alarms) == [(watched.id, "timeout"), (killed.id, "timeout")]
    flagged = await setup.store.get_instance(a.id)
    assert flagged is not None and flagged.timeout_alarmed and flagged.status == InstanceStatus.RUNNING
    still = await setup.store.get_instance(c.id)
    assert still is not None and not still.timeout_alarmed


async def test_timeout_watcher_loop_runs_on_the_clock(setup: Setup) -> None:
    kill = MonitorOptions(timeout=10, timeout_kill_enable=True)
    job = await add_job(
        setup.store,
        setup.clock,
        JobSpec(class_name="demo:Noop", name="k", schedule=fixed_rate(3600), monitor=kill),
    )
    running = await setup.run(job)
    await setup.lifecycle.start()
    await setup.clock.advance(11)
    await eventually(lambda: len(setup.killed) == 1)
    assert setup.killed[0][0] == running.id
    await setup.lifecycle.stop()
