"""Filtering a group's jobs (`JobStore.list_jobs`: state, time type, execute mode) and its instances
across jobs (`InstanceStore.list_group_instances`) in the store, on SQLite and PostgreSQL (the `store`
fixture): what the console's lists page through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sx.processors import ExecuteMode, InstanceStatus, JobSpec, TimeType, TriggerType, cron
from sx.scheduler.store import Instance, InstanceChange, Job, NewInstance
from sx.scheduler.store.sql import SqlStore


async def _job(store: SqlStore, name: str, *, enabled: bool = True, **changes: object) -> Job:
    spec = JobSpec(name=name, class_name="x.y").model_copy(update=changes)
    return await store.create_job(
        namespace="ns", group_id="g", spec=spec, enabled=enabled, managed=False, next_fire_time=None
    )


async def test_list_jobs_filters_by_state_time_type_and_mode(store: SqlStore) -> None:
    api_job = await _job(store, "api-standalone")
    cron_job = await _job(store, "cron-grid", schedule=cron("0 0 3 * * ?"), execute_mode=ExecuteMode.GRID)
    off = await _job(store, "off-grid", enabled=False, execute_mode=ExecuteMode.GRID)
    # A description quoting the stored form must not match the mode filter.
    tricky = await _job(store, "tricky", description='"execute_mode":"grid"')

    def ids(page: object) -> list[int]:
        return [job.id for job in page.items]  # type: ignore[attr-defined]

    assert ids(await store.list_jobs("ns", "g", enabled=False)) == [off.id]
    assert ids(await store.list_jobs("ns", "g", enabled=True)) == [api_job.id, cron_job.id, tricky.id]
    assert ids(await store.list_jobs("ns", "g", time_type=TimeType.CRON)) == [cron_job.id]
    assert ids(await store.list_jobs("ns", "g", execute_mode=ExecuteMode.GRID)) == [cron_job.id, off.id]
    both = await store.list_jobs("ns", "g", execute_mode=ExecuteMode.GRID, enabled=True, name_contains="CRON")
    assert (ids(both), both.total) == ([cron_job.id], 1)
    paged = await store.list_jobs("ns", "g", time_type=TimeType.API, offset=1, limit=1)
    assert (ids(paged), paged.total) == ([off.id], 3)


async def _instance(
    store: SqlStore, job: Job, trigger: TriggerType, at: datetime, *, group_id: str = "g"
) -> Instance:
    return await store.create_instance(
        NewInstance(
            job_id=job.id, namespace="ns", group_id=group_id, status=InstanceStatus.WAITING,
            trigger_type=trigger, time_type=TimeType.API, schedule_time=at, data_time=at,
        )
    )  # fmt: skip


async def test_list_group_instances_across_jobs(store: SqlStore) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    one, two = await _job(store, "one"), await _job(store, "two")
    first = await _instance(store, one, TriggerType.API, t0)
    second = await _instance(store, two, TriggerType.SCHEDULED, t0 + timedelta(hours=1))
    third = await _instance(store, one, TriggerType.MANUAL_RERUN, t0 + timedelta(hours=2))
    await store.update_instance(first.id, _change(InstanceStatus.FAILED))

    def ids(page: object) -> list[int]:
        return [i.id for i in page.items]  # type: ignore[attr-defined]

    everything = await store.list_group_instances("ns", "g")
    assert (ids(everything), everything.total) == ([third.id, second.id, first.id], 3)
    assert ids(await store.list_group_instances("ns", "g", job_id=one.id)) == [third.id, first.id]
    assert ids(await store.list_group_instances("ns", "g", statuses=[InstanceStatus.FAILED])) == [first.id]
    triggered = await store.list_group_instances(
        "ns", "g", trigger_types=[TriggerType.SCHEDULED, TriggerType.API]
    )
    assert ids(triggered) == [second.id, first.id]
    window = await store.list_group_instances(
        "ns", "g", since=t0 + timedelta(minutes=30), until=t0 + timedelta(hours=1)
    )
    assert ids(window) == [second.id]
    paged = await store.list_group_instances("ns", "g", offset=1, limit=1)
    assert (ids(paged), paged.total) == ([second.id], 3)
    assert (await store.list_group_instances("ns", "other")).total == 0


def _change(status: InstanceStatus) -> InstanceChange:
    return InstanceChange(status=status)
