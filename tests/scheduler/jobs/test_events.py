"""Instance ends as events: the lifecycle hears ``finished``, asks the retry checks, announces ``ended``."""

from __future__ import annotations

from datetime import UTC

from sx.processors import InstanceStatus, JobSpec, TriggerType, api
from sx.scheduler._clock import ManualClock
from sx.scheduler.jobs import InstanceEvents, Lifecycle
from sx.scheduler.store import Instance, InstanceChange, Job, NewInstance, Store
from tests.scheduler.jobs.test_triggers import GROUP, NS, T0, add_job, prepare


async def failed_instance(store: Store, clock: ManualClock, job: Job) -> Instance:
    made = await store.create_instance(
        NewInstance(
            job_id=job.id,
            namespace=NS,
            group_id=GROUP,
            status=InstanceStatus.WAITING,
            trigger_type=TriggerType.API,
            time_type=job.spec.schedule.time_type,
            schedule_time=clock.now(),
            data_time=clock.now(),
        )
    )
    done = await store.update_instance(
        made.id, InstanceChange(status=InstanceStatus.FAILED, end_time=clock.now(), result="boom")
    )
    assert done is not None
    return done


async def test_listeners_run_in_order_and_every_retry_check_must_agree(store: Store) -> None:
    await prepare(store)
    clock = ManualClock(T0)
    job = await add_job(store, clock, JobSpec(class_name="demo:Noop", name="e", schedule=api()))
    instance = await failed_instance(store, clock, job)
    events = InstanceEvents()
    heard: list[str] = []

    async def first(instance: Instance, system_failure: bool) -> None:
        heard.append(f"first {system_failure}")

    async def second(instance: Instance, system_failure: bool) -> None:
        heard.append(f"second {system_failure}")

    events.on_finished(first)
    events.on_finished(second)
    await events.finished(instance, True)
    assert heard == ["first True", "second True"]
    assert await events.may_retry(instance)  # no check: retried

    async def yes(_: Instance) -> bool:
        return True

    async def no(_: Instance) -> bool:
        return False

    events.add_retry_check(yes)
    assert await events.may_retry(instance)
    events.add_retry_check(no)
    assert not await events.may_retry(instance)


async def test_the_lifecycle_handles_finished_and_announces_ended_with_its_retry(store: Store) -> None:
    await prepare(store)
    clock = ManualClock(T0)
    events = InstanceEvents()
    created: list[Instance] = []
    ended: list[tuple[int, int | None]] = []
    refused: set[int] = set()

    async def on_created(instances: list[Instance]) -> None:
        created.extend(instances)

    async def on_ended(instance: Instance, retry: Instance | None) -> None:
        ended.append((instance.id, retry.id if retry is not None else None))

    async def may_retry(instance: Instance) -> bool:
        return instance.id not in refused

    events.on_ended(on_ended)
    events.add_retry_check(may_retry)
    Lifecycle(
        store, clock=clock, default_tz=UTC, engine=None, alarms=None, on_created=on_created, events=events
    )
    job = await add_job(
        store, clock, JobSpec(class_name="demo:Noop", name="e", schedule=api(), max_attempt=3)
    )

    retried = await failed_instance(store, clock, job)
    await events.finished(retried, False)
    [retry] = created
    assert retry.retry_of == retried.id
    assert ended == [(retried.id, retry.id)]

    kept = await failed_instance(store, clock, job)
    refused.add(kept.id)
    await events.finished(kept, False)
    assert created == [retry]  # the check refused: no retry
    assert ended[-1] == (kept.id, None)
