"""Backfills in the store (`BackfillStore`) and re-run pointers, on SQLite and PostgreSQL: planned fire
times, starting them in order within the concurrency, exactly once across two stores sharing a
database, settling, stopping, and backfill instances left out of the live maxConcurrency counts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from sx.processors import InstanceStatus, JobSpec, TimeType, TriggerType, cron
from sx.scheduler.store import (
    BackfillState,
    FireState,
    Instance,
    InstanceChange,
    Job,
    NewBackfill,
    NewInstance,
    NewWorkflowInstance,
    NotFoundError,
    WorkflowDef,
)
from sx.scheduler.store.sql import SqlStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


async def _job(store: SqlStore) -> Job:
    spec = JobSpec(name="j", class_name="demo:Proc", schedule=cron("0 0 * * * ?"))
    return await store.create_job(
        namespace="ns", group_id="g", spec=spec, enabled=True, managed=False, next_fire_time=None
    )


def _maker(job: Job, trigger: TriggerType = TriggerType.DATA_RERUN) -> Callable[[datetime], NewInstance]:
    def make(when: datetime) -> NewInstance:
        return NewInstance(
            job_id=job.id, namespace="ns", group_id="g", status=InstanceStatus.WAITING, trigger_type=trigger,
            time_type=TimeType.CRON, schedule_time=when, data_time=when,
        )  # fmt: skip

    return make


def _plan(job: Job, count: int, *, concurrency: int = 2, skipped: int = 0) -> NewBackfill:
    times = tuple(T0 + i * HOUR for i in range(count))
    return NewBackfill(
        job_id=job.id, namespace="ns", group_id="g", start_time=times[0], end_time=times[-1],
        concurrency=concurrency, skip_successful=skipped > 0, fire_times=times,
        skipped=frozenset(times[:skipped]),
    )  # fmt: skip


async def _finish(store: SqlStore, instance: Instance, status: InstanceStatus) -> None:
    await store.update_instance(instance.id, InstanceChange(status=status, end_time=T0))


async def test_a_backfill_starts_its_fires_in_order_within_its_concurrency(store: SqlStore) -> None:
    job = await _job(store)
    backfill = await store.create_backfill(_plan(job, 5, skipped=1))
    assert backfill.state == BackfillState.RUNNING
    assert (backfill.progress.pending, backfill.progress.skipped, backfill.progress.total) == (4, 1, 5)

    first = await store.start_backfill_fires(backfill.id, _maker(job), T0)
    assert [i.schedule_time for i in first] == [T0 + HOUR, T0 + 2 * HOUR]
    assert all(i.trigger_type == TriggerType.DATA_RERUN for i in first)
    assert await store.start_backfill_fires(backfill.id, _maker(job), T0) == []  # no room left

    # Backfill instances are not counted against the live fires' maxConcurrency.
    assert await store.count_active_instances(job.id) == 0
    assert await store.count_active_instances_by_job([job.id]) == {}
    live = await store.create_instance(_maker(job, TriggerType.SCHEDULED)(T0))
    assert await store.count_active_instances(job.id) == 1
    assert await store.count_active_instances_by_job([job.id]) == {job.id: 1}
    await _finish(store, live, InstanceStatus.SUCCESS)

    await _finish(store, first[0], InstanceStatus.SUCCESS)
    assert await store.settle_backfill_fire(
        backfill.id, first[0].schedule_time, only_if_instance=first[0].id, state=FireState.DONE
    )
    assert not await store.settle_backfill_fire(  # settled once
        backfill.id, first[0].schedule_time, only_if_instance=first[0].id, state=FireState.FAILED
    )
    (third,) = await store.start_backfill_fires(backfill.id, _maker(job), T0)
    assert third.schedule_time == T0 + 3 * HOUR

    fires = await store.list_backfill_fires(backfill.id)
    assert [(f.state, f.instance_id) for f in fires.items] == [
        (FireState.SKIPPED, None),
        (FireState.DONE, first[0].id),
        (FireState.RUNNING, first[1].id),
        (FireState.RUNNING, third.id),
        (FireState.PENDING, None),
    ]
    running = await store.list_backfill_fires(backfill.id, states=[FireState.RUNNING])
    assert [f.instance_id for f in running.items] == [first[1].id, third.id]

    stopped = await store.set_backfill_state(
        backfill.id, BackfillState.STOPPED, only_if=BackfillState.RUNNING
    )
    assert stopped is not None and stopped.state == BackfillState.STOPPED
    assert (stopped.progress.done, stopped.progress.running, stopped.progress.pending) == (1, 2, 1)
    assert (
        await store.set_backfill_state(backfill.id, BackfillState.STOPPED, only_if=BackfillState.RUNNING)
        is None
    )
    await _finish(store, third, InstanceStatus.SUCCESS)
    assert await store.settle_backfill_fire(
        backfill.id, third.schedule_time, only_if_instance=third.id, state=FireState.DONE
    )
    assert await store.start_backfill_fires(backfill.id, _maker(job), T0) == []  # stopped: nothing starts
    assert await store.running_backfill_ids() == []

    page = await store.list_backfills("ns", "g")
    assert (page.total, page.items[0].id) == (1, backfill.id)
    assert (await store.list_backfills("ns", "g", job_id=job.id + 1)).total == 0
    assert (await store.list_backfills("ns", "other")).total == 0


async def test_the_same_fire_time_is_started_once_by_two_stores(store: SqlStore, store_url: str) -> None:
    job = await _job(store)
    backfill = await store.create_backfill(_plan(job, 40, concurrency=40))
    other = SqlStore(store_url)
    await other.start()
    try:
        runs = [
            s.start_backfill_fires(backfill.id, _maker(job), T0) for s in (store, other) for _ in range(3)
        ]
        created = [i for batch in await asyncio.gather(*runs) for i in batch]
    finally:
        await other.close()
    assert sorted(i.schedule_time for i in created) == list(_plan(job, 40).fire_times)
    instances = await store.list_instances(job.id, limit=100)
    assert instances.total == 40


async def test_successful_data_times_and_rerun_pointer(store: SqlStore) -> None:
    job = await _job(store)
    make = _maker(job, TriggerType.SCHEDULED)
    ok = await store.create_instance(make(T0))
    failed = await store.create_instance(make(T0 + HOUR))
    await _finish(store, ok, InstanceStatus.SUCCESS)
    await _finish(store, failed, InstanceStatus.FAILED)
    assert await store.successful_data_times(job.id, T0, T0 + HOUR) == {T0}
    assert await store.successful_data_times(job.id, T0 + HOUR, T0 + 2 * HOUR) == set()

    base = make(T0 + HOUR)
    rerun = await store.create_instance(
        NewInstance(**{**{f: getattr(base, f) for f in base.__slots__}, "rerun_of": failed.id})
    )
    assert rerun.rerun_of == failed.id
    fetched = await store.get_instance(rerun.id)
    assert fetched is not None and fetched.rerun_of == failed.id and fetched.retry_of is None


async def test_a_backfill_of_a_missing_job_is_refused(store: SqlStore) -> None:
    job = await _job(store)
    await store.delete_job(job.id)
    with pytest.raises(NotFoundError, match="job_id"):
        await store.create_backfill(_plan(job, 2))


async def test_a_workflow_backfill_starts_workflow_instances(store: SqlStore) -> None:
    job = await _job(store)
    definition = WorkflowDef(name="wf", schedule=cron("0 0 * * * ?"), nodes=(job.id,))
    workflow = await store.create_workflow(
        namespace="ns", group_id="g", definition=definition, enabled=False, managed=False, next_fire_time=None
    )
    plan = _plan(job, 3, concurrency=2)
    backfill = await store.create_backfill(
        NewBackfill(
            **{**{f: getattr(plan, f) for f in plan.__slots__}, "job_id": None, "workflow_id": workflow.id}
        )
    )
    assert (backfill.job_id, backfill.workflow_id, backfill.progress.pending) == (None, workflow.id, 3)

    def make(when: datetime) -> NewWorkflowInstance:
        return NewWorkflowInstance(
            workflow_id=workflow.id, namespace="ns", group_id="g", status=InstanceStatus.WAITING,
            trigger_type=TriggerType.DATA_RERUN, schedule_time=when, nodes=(job.id,),
        )  # fmt: skip

    started = await store.start_workflow_backfill_fires(backfill.id, make, T0)
    assert [w.schedule_time for w in started] == [T0, T0 + HOUR]
    assert await store.start_workflow_backfill_fires(backfill.id, make, T0) == []
    fetched = await store.get_workflow_instance(started[0].id)
    assert fetched == started[0] and fetched.trigger_type == TriggerType.DATA_RERUN
    await store.update_workflow_instance(started[0].id, status=InstanceStatus.SUCCESS, end_time=T0)
    assert await store.successful_workflow_times(workflow.id, T0, T0 + HOUR) == {T0}
    await store.delete_workflow(workflow.id)
    assert await store.get_backfill(backfill.id) is None  # it goes with its workflow
