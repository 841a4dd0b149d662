"""The store contract: every test runs against SQLite and PostgreSQL (the `store` fixture)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from sx.processors import InstanceStatus, JobSpec, TimeType, TriggerType, cron
from sx.scheduler.store import (
    AccessKey,
    Calendar,
    DuplicateError,
    Fire,
    Group,
    Instance,
    InstanceChange,
    Job,
    Namespace,
    NewInstance,
    NotFoundError,
)
from sx.scheduler.store.sql import SqlStore, normalize_url, sqlite_url
from sx.scheduler.store.sql._tables import VERSION_TABLE, metadata

T0 = datetime(2030, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def spec(name: str, **fields: Any) -> JobSpec:
    return JobSpec(name=name, class_name="demo:Proc", **fields)


async def add_job(
    store: SqlStore,
    name: str,
    *,
    group_id: str = "g",
    enabled: bool = True,
    next_fire_time: datetime | None = T0,
    managed: bool = False,
) -> Job:
    return await store.create_job(
        namespace="ns",
        group_id=group_id,
        spec=spec(name),
        enabled=enabled,
        managed=managed,
        next_fire_time=next_fire_time,
    )


async def next_fire(store: SqlStore, job_id: int) -> datetime | None:
    job = await store.get_job(job_id)
    assert job is not None
    return job.next_fire_time


def new_instance(
    job: Job,
    *,
    status: InstanceStatus = InstanceStatus.WAITING,
    schedule_time: datetime = T0,
    retry_of: int | None = None,
    result: str = "",
) -> NewInstance:
    return NewInstance(
        job_id=job.id,
        namespace=job.namespace,
        group_id=job.group_id,
        status=status,
        trigger_type=TriggerType.SCHEDULED,
        time_type=TimeType.CRON,
        schedule_time=schedule_time,
        data_time=schedule_time,
        retry_of=retry_of,
        result=result,
    )


def fire(job: Job, due: datetime, *, instance: bool = True) -> Fire:
    return Fire(
        job_id=job.id,
        due=due,
        next_fire_time=due + MINUTE,
        instance=new_instance(job, schedule_time=due) if instance else None,
    )


# -- namespaces, groups, access keys, nonces --------------------------------------------------------


async def test_namespaces(store: SqlStore) -> None:
    made = await store.create_namespace(Namespace(id="ns-b", name="B", description="second"))
    await store.create_namespace(Namespace(id="ns-a", name="A"))
    assert made.created_at is not None and made.created_at.tzinfo is UTC
    with pytest.raises(DuplicateError, match="ns-b"):
        await store.create_namespace(Namespace(id="ns-b", name="again"))
    assert await store.get_namespace("ns-b") == made
    assert await store.get_namespace("missing") is None
    assert [n.id for n in await store.list_namespaces()] == ["ns-a", "ns-b"]


async def test_groups(store: SqlStore) -> None:
    made = await store.create_group(Group(namespace="ns", group_id="g2", app_key="k2", description="d"))
    await store.create_group(Group(namespace="ns", group_id="g1", app_key="k1"))
    await store.create_group(Group(namespace="other", group_id="g1", app_key="k3"))
    with pytest.raises(DuplicateError, match="g2"):
        await store.create_group(Group(namespace="ns", group_id="g2", app_key="x"))
    assert await store.get_group("ns", "g2") == made
    assert await store.get_group("ns", "nope") is None
    assert [g.group_id for g in await store.list_groups("ns")] == ["g1", "g2"]
    assert [g.app_key for g in await store.list_groups("other")] == ["k3"]


async def test_access_keys(store: SqlStore) -> None:
    assert await store.has_access_keys() is False
    key = await store.create_access_key(AccessKey(key_id="ak1", secret="s1", namespace="ns"))
    assert await store.has_access_keys() is True
    await store.create_access_key(AccessKey(key_id="ak2", secret="s2", namespace="other", enabled=False))
    with pytest.raises(DuplicateError, match="ak1"):
        await store.create_access_key(AccessKey(key_id="ak1", secret="x", namespace="ns"))
    assert await store.get_access_key("ak1") == key
    second = await store.get_access_key("ak2")
    assert second is not None and second.enabled is False
    assert [k.key_id for k in await store.list_access_keys()] == ["ak1", "ak2"]
    assert [k.key_id for k in await store.list_access_keys("other")] == ["ak2"]
    assert await store.delete_access_key("ak1") is True
    assert await store.delete_access_key("ak1") is False
    assert await store.get_access_key("ak1") is None
    assert await store.has_access_keys() is True  # a disabled key still counts: requests must be signed
    assert await store.delete_access_key("ak2") is True
    assert await store.has_access_keys() is False


async def test_nonce_replay(store: SqlStore) -> None:
    later = datetime.now(UTC) + timedelta(minutes=15)
    assert await store.remember_nonce("n1", later) is True
    assert await store.remember_nonce("n1", later) is False
    assert await store.remember_nonce("n2", later) is True
    # An expired record is no replay: the nonce may be used again.
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert await store.remember_nonce("old", past) is True
    assert await store.remember_nonce("old", later) is True
    assert await store.remember_nonce("old", later) is False
    with pytest.raises(ValueError, match="expires_at"):
        await store.remember_nonce("naive", datetime(2030, 1, 1))


# -- jobs -------------------------------------------------------------------------------------------


async def test_job_create_get_find(store: SqlStore) -> None:
    job_spec = spec("alpha", schedule=cron("0 * * * * ?"), description="hourly")
    job = await store.create_job(
        namespace="ns",
        group_id="g",
        spec=job_spec,
        enabled=True,
        managed=True,
        next_fire_time=T0,
        namespace_source="src",
    )
    assert job.name == "alpha" and job.managed and job.namespace_source == "src"
    fetched = await store.get_job(job.id)
    assert fetched == job
    assert fetched.spec == job_spec
    assert await store.find_job("ns", "g", "alpha") == job
    assert await store.find_job("ns", "other", "alpha") is None
    assert await store.get_job(job.id + 1000) is None
    with pytest.raises(DuplicateError, match="alpha"):
        await add_job(store, "alpha")
    elsewhere = await add_job(store, "alpha", group_id="g2")
    assert elsewhere.id != job.id


async def test_list_jobs_paging_and_name_filter(store: SqlStore) -> None:
    made = [await add_job(store, f"job-{i:02d}") for i in range(7)]
    await add_job(store, "Special_100%")
    await add_job(store, "in-other-group", group_id="g2")
    page = await store.list_jobs("ns", "g", offset=2, limit=3)
    assert page.total == 8
    assert [j.id for j in page.items] == [j.id for j in made[2:5]]
    assert (await store.list_jobs("ns", "g", offset=8)).items == []
    named = await store.list_jobs("ns", "g", name_contains="JOB-0")
    assert named.total == 7 and len(named.items) == 7
    # LIKE wildcards in the filter are literal characters.
    assert [j.name for j in (await store.list_jobs("ns", "g", name_contains="%")).items] == ["Special_100%"]
    assert [j.name for j in (await store.list_jobs("ns", "g", name_contains="l_1")).items] == ["Special_100%"]
    assert (await store.list_jobs("ns", "g", name_contains="o_1")).total == 0
    with pytest.raises(ValueError, match="offset=-1"):
        await store.list_jobs("ns", "g", offset=-1)


async def test_update_job(store: SqlStore) -> None:
    job = await add_job(store, "a")
    await add_job(store, "b")
    renamed = await store.update_job(job.id, spec=spec("c", schedule=cron("0 0 * * * ?")))
    assert renamed.name == "c" and renamed.spec.schedule.time_type is TimeType.CRON
    assert renamed.updated_at is not None and job.updated_at is not None
    assert renamed.updated_at >= job.updated_at
    assert await store.find_job("ns", "g", "a") is None
    with pytest.raises(DuplicateError):
        await store.update_job(job.id, spec=spec("b"))
    assert (await store.get_job(job.id)) == renamed
    off = await store.update_job(job.id, enabled=False, managed=True, clear_next_fire_time=True)
    assert (off.enabled, off.managed, off.next_fire_time) == (False, True, None)
    moved = await store.update_job(job.id, next_fire_time=T0 + MINUTE)
    assert moved.next_fire_time == T0 + MINUTE and moved.enabled is False
    with pytest.raises(NotFoundError, match="job_id=999999"):
        await store.update_job(999_999, enabled=True)
    with pytest.raises(ValueError, match="clear_next_fire_time"):
        await store.update_job(job.id, next_fire_time=T0, clear_next_fire_time=True)


async def test_delete_job_deletes_instances(store: SqlStore) -> None:
    job = await add_job(store, "doomed")
    keep = await add_job(store, "kept")
    made = await store.create_instance(new_instance(job))
    other = await store.create_instance(new_instance(keep))
    assert await store.delete_job(job.id) is True
    assert await store.delete_job(job.id) is False
    assert await store.get_job(job.id) is None
    assert await store.get_instance(made.id) is None
    assert await store.get_instance(other.id) == other
    # Ids are never reused after a delete.
    assert (await add_job(store, "doomed")).id > keep.id


# -- the trigger engine -----------------------------------------------------------------------------


async def test_due_jobs_order_and_limit(store: SqlStore) -> None:
    late = await add_job(store, "late", next_fire_time=T0 + 2 * MINUTE)
    first = await add_job(store, "first", next_fire_time=T0)
    tie = await add_job(store, "tie", next_fire_time=T0)
    await add_job(store, "future", next_fire_time=T0 + 10 * MINUTE)
    await add_job(store, "disabled", enabled=False, next_fire_time=T0 - MINUTE)
    await add_job(store, "api", next_fire_time=None)
    due = await store.due_jobs(T0 + 2 * MINUTE, limit=10)
    assert [j.id for j in due] == [first.id, tie.id, late.id]
    assert [j.id for j in await store.due_jobs(T0 + 5 * MINUTE, limit=2)] == [first.id, tie.id]
    assert await store.due_jobs(T0 - MINUTE, limit=10) == []


async def test_next_due_time_ignores_disabled_and_unscheduled(store: SqlStore) -> None:
    assert await store.next_due_time() is None
    await add_job(store, "disabled", enabled=False, next_fire_time=T0 - MINUTE)
    await add_job(store, "api", next_fire_time=None)
    assert await store.next_due_time() is None
    await add_job(store, "on", next_fire_time=T0 + MINUTE)
    assert await store.next_due_time() == T0 + MINUTE


async def test_claim_fires_wins_once(store: SqlStore) -> None:
    job = await add_job(store, "j")
    (won,) = await store.claim_fires([fire(job, T0)])
    assert isinstance(won, Instance)
    assert won.job_id == job.id and won.schedule_time == T0 and won.status is InstanceStatus.WAITING
    assert await store.get_instance(won.id) == won
    assert await next_fire(store, job.id) == T0 + MINUTE
    # The same fire again (another replica that saw the old due time) loses.
    assert await store.claim_fires([fire(job, T0)]) == [None]
    assert (await store.list_instances(job.id)).total == 1


async def test_claim_without_instance_and_lost_claims(store: SqlStore) -> None:
    job = await add_job(store, "skip")
    off = await add_job(store, "off", enabled=False)
    api = await add_job(store, "api", next_fire_time=None)
    results = await store.claim_fires(
        [fire(job, T0, instance=False), fire(off, T0), fire(api, T0), fire(job, T0 + MINUTE)]
    )
    assert results[:3] == [None, None, None]
    # A job's next fire in the same call (its due is the first fire's new time) wins too.
    assert isinstance(results[3], Instance) and results[3].schedule_time == T0 + MINUTE
    assert await next_fire(store, job.id) == T0 + 2 * MINUTE
    assert await next_fire(store, off.id) == T0
    assert (await store.list_instances(off.id)).total == 0
    # A fire that ends the series leaves no next fire time.
    assert await store.claim_fires([Fire(job.id, T0 + 2 * MINUTE, None, None)]) == [None]
    assert await next_fire(store, job.id) is None
    assert await store.next_due_time() is None
    assert await store.claim_fires([]) == []
    with pytest.raises(ValueError, match=r"fires\[0\].instance.job_id"):
        await store.claim_fires([Fire(job.id, T0, None, new_instance(off))])


async def test_claim_many_fires_in_one_call(store: SqlStore) -> None:
    jobs = [await add_job(store, f"j{i}") for i in range(300)]
    fires = [fire(j, T0, instance=i % 3 != 0) for i, j in enumerate(jobs)]
    fires.insert(10, fire(jobs[5], T0 + 30 * MINUTE))  # stale: loses
    results = await store.claim_fires(fires)
    assert results[10] is None
    created = [r for r in results if r is not None]
    assert len(created) == 200
    assert [r.job_id for r in created] == [f.job_id for f in fires if f.instance is not None and f.due == T0]
    assert len({r.id for r in created}) == 200
    assert created == [await store.get_instance(r.id) for r in created]
    assert await store.due_jobs(T0, limit=1000) == []
    assert len(await store.due_jobs(T0 + MINUTE, limit=1000)) == 300


async def test_two_stores_racing_claim_fires(store: SqlStore, store_url: str) -> None:
    jobs = [await add_job(store, f"race{i}") for i in range(20)]
    other = SqlStore(store_url)
    await other.start()
    try:
        for _ in range(3):
            due = await next_fire(store, jobs[0].id)
            assert due is not None
            fires = [fire(j, due) for j in jobs]
            first, second = await asyncio.gather(
                store.claim_fires(fires), other.claim_fires(list(reversed(fires)))
            )
            for a, b in zip(first, reversed(second), strict=True):
                assert (a is None) != (b is None)
    finally:
        await other.close()
    for job in jobs:
        assert (await store.list_instances(job.id)).total == 3


# -- instances --------------------------------------------------------------------------------------


async def test_create_and_list_instances(store: SqlStore) -> None:
    job = await add_job(store, "j")
    other = await add_job(store, "other")
    made = [
        await store.create_instance(
            new_instance(job, schedule_time=T0 + i * MINUTE, status=InstanceStatus(1 + i % 5))
        )
        for i in range(8)
    ]
    await store.create_instance(new_instance(other))
    assert await store.get_instance(made[0].id) == made[0]
    assert await store.get_instance(made[-1].id + 100) is None
    page = await store.list_instances(job.id, offset=1, limit=3)
    assert page.total == 8
    assert [i.id for i in page.items] == [m.id for m in reversed(made)][1:4]
    running = await store.list_instances(job.id, statuses=[InstanceStatus.RUNNING])
    assert [i.id for i in running.items] == [made[7].id, made[2].id]
    window = await store.list_instances(job.id, since=T0 + 2 * MINUTE, until=T0 + 4 * MINUTE)
    assert [i.id for i in window.items] == [made[4].id, made[3].id, made[2].id]
    with pytest.raises(NotFoundError, match="job_id"):
        await store.create_instance(new_instance(Job(999_999, "ns", "g", spec("x"), True, False, None)))


async def test_instances_with_status(store: SqlStore) -> None:
    job = await add_job(store, "j")
    elsewhere = await add_job(store, "k", group_id="g2")
    a = await store.create_instance(new_instance(job, status=InstanceStatus.RUNNING))
    await store.create_instance(new_instance(job, status=InstanceStatus.SUCCESS))
    b = await store.create_instance(new_instance(elsewhere, status=InstanceStatus.WAITING))
    c = await store.create_instance(new_instance(job, status=InstanceStatus.WAITING))
    active = [InstanceStatus.WAITING, InstanceStatus.RUNNING]
    assert [i.id for i in await store.instances_with_status(active)] == [a.id, b.id, c.id]
    assert [i.id for i in await store.instances_with_status(active, limit=2)] == [a.id, b.id]
    assert [i.id for i in await store.instances_with_status(active, group_id="g")] == [a.id, c.id]


async def test_update_instance_compare_and_set(store: SqlStore) -> None:
    job = await add_job(store, "j")
    made = await store.create_instance(new_instance(job))
    started = T0 + MINUTE
    running = await store.update_instance(
        made.id,
        InstanceChange(status=InstanceStatus.RUNNING, start_time=started, worker_id="w1", executor="e"),
        only_if_status=[InstanceStatus.WAITING, InstanceStatus.READY],
    )
    assert running is not None
    assert (running.status, running.start_time, running.worker_id, running.executor) == (
        InstanceStatus.RUNNING,
        started,
        "w1",
        "e",
    )
    assert running.result == "" and running.end_time is None
    # The guard fails: nothing changes.
    lost = await store.update_instance(
        made.id,
        InstanceChange(status=InstanceStatus.READY, worker_id="w2"),
        only_if_status=[InstanceStatus.WAITING],
    )
    assert lost is None
    assert await store.get_instance(made.id) == running
    done = await store.update_instance(
        made.id,
        InstanceChange(
            status=InstanceStatus.SUCCESS, end_time=T0 + 2 * MINUTE, result="ok", timeout_alarmed=True
        ),
    )
    assert done is not None and done.status is InstanceStatus.SUCCESS and done.timeout_alarmed
    assert done.result == "ok" and done.worker_id == "w1"
    assert await store.update_instance(made.id, InstanceChange()) == done
    assert (
        await store.update_instance(made.id, InstanceChange(), only_if_status=[InstanceStatus.RUNNING])
        is None
    )
    assert await store.update_instance(made.id + 1000, InstanceChange(progress="x")) is None


async def test_update_instances_applies_each_guarded_change(store: SqlStore) -> None:
    job = await add_job(store, "j")
    waiting = [await store.create_instance(new_instance(job)) for _ in range(3)]
    moved_on = await store.update_instance(waiting[1].id, InstanceChange(status=InstanceStatus.RUNNING))
    assert moved_on is not None
    changes = [(i.id, InstanceChange(status=InstanceStatus.READY, worker_id=f"w{i.id}")) for i in waiting]
    changes.append((waiting[-1].id + 1000, InstanceChange(status=InstanceStatus.READY)))  # no such one
    updated = await store.update_instances(
        changes, only_if_status=[InstanceStatus.WAITING, InstanceStatus.READY]
    )
    assert set(updated) == {i for i, _ in changes}
    for instance in (waiting[0], waiting[2]):
        done = updated[instance.id]
        assert done is not None and (done.status, done.worker_id) == (InstanceStatus.READY, f"w{instance.id}")
        assert await store.get_instance(instance.id) == done
    # The guard failed for the running one, and nothing of it changed.
    assert updated[waiting[1].id] is None and updated[waiting[-1].id + 1000] is None
    assert await store.get_instance(waiting[1].id) == moved_on
    assert await store.update_instances([]) == {}


async def test_count_active_instances(store: SqlStore) -> None:
    job = await add_job(store, "j")
    other = await add_job(store, "k")
    for status in InstanceStatus:
        await store.create_instance(new_instance(job, status=status))
    await store.create_instance(new_instance(other, status=InstanceStatus.RUNNING))
    assert await store.count_active_instances(job.id) == 3
    assert await store.count_active_instances(other.id) == 1
    assert await store.count_active_instances(other.id + 1000) == 0


@pytest.mark.parametrize("exclusive", [False, True], ids=["shared", "exclusive"])
async def test_active_instances_below(store_url: str, exclusive: bool) -> None:
    # Held exclusively (a scheduler's SQLite store), the answer may come from a bound kept in memory:
    # it must stay exact across creations, finishes, backfills and a finished instance re-opened.
    store = SqlStore(store_url, exclusive=exclusive)
    await store.start()
    try:
        job = await add_job(store, "j")
        assert await store.active_instances_below(job.id, 1)
        first = await store.create_instance(new_instance(job))
        assert not await store.active_instances_below(job.id, 1)
        assert await store.active_instances_below(job.id, 2)
        await store.create_instance(replace(new_instance(job), trigger_type=TriggerType.DATA_RERUN))
        assert await store.active_instances_below(job.id, 2)  # a backfill does not count
        second = await store.create_instance(new_instance(job, status=InstanceStatus.RUNNING))
        assert not await store.active_instances_below(job.id, 2)
        assert await store.active_instances_below(job.id, 3)
        for done in (first, second):
            change = InstanceChange(status=InstanceStatus.SUCCESS, end_time=T0)
            await store.update_instance(done.id, change, only_if_status=[done.status])
        assert await store.active_instances_below(job.id, 1)
        # Re-opened (a task retry): active again, though created before the last count.
        await store.update_instance(
            first.id, InstanceChange(status=InstanceStatus.WAITING), only_if_status=[InstanceStatus.SUCCESS]
        )
        assert not await store.active_instances_below(job.id, 1)
        for _ in range(3):
            await store.create_instance(new_instance(job))
        assert not await store.active_instances_below(job.id, 4)
        assert await store.active_instances_below(job.id, 5)
        assert await store.active_instances_below(job.id + 1000, 1)
    finally:
        await store.close()


@pytest.mark.parametrize("exclusive", [False, True], ids=["shared", "exclusive"])
async def test_get_job_sees_every_write(store_url: str, exclusive: bool) -> None:
    # Held exclusively, jobs read by id may be kept in memory: every write must still show.
    store = SqlStore(store_url, exclusive=exclusive)
    await store.start()
    try:
        job = await add_job(store, "j")
        assert await store.get_job(job.id) == job
        assert await store.get_job(job.id) == job
        disabled = await store.update_job(job.id, enabled=False, clear_next_fire_time=True)
        assert await store.get_job(job.id) == disabled and not disabled.enabled
        renamed = await store.update_job(job.id, spec=spec("renamed"))
        assert await store.get_job(job.id) == renamed and renamed.name == "renamed"
        assert await store.delete_job(job.id)
        assert await store.get_job(job.id) is None
    finally:
        await store.close()


async def test_find_retry(store: SqlStore) -> None:
    job = await add_job(store, "j")
    failed = await store.create_instance(new_instance(job, status=InstanceStatus.FAILED))
    assert await store.find_retry(failed.id) is None
    retry = await store.create_instance(new_instance(job, retry_of=failed.id))
    assert retry.retry_of == failed.id
    assert await store.find_retry(failed.id) == retry
    assert await store.find_retry(retry.id) is None


async def test_prune_instances(store: SqlStore) -> None:
    job = await add_job(store, "j")
    other = await add_job(store, "k")
    finished = [
        await store.create_instance(new_instance(job, status=InstanceStatus.SUCCESS)) for _ in range(5)
    ]
    running = await store.create_instance(new_instance(job, status=InstanceStatus.RUNNING))
    finished.append(await store.create_instance(new_instance(job, status=InstanceStatus.FAILED)))
    elsewhere = await store.create_instance(new_instance(other, status=InstanceStatus.SUCCESS))
    assert await store.prune_instances(job.id, keep=2) == 4
    left = [i.id for i in (await store.list_instances(job.id, limit=100)).items]
    assert left == [finished[-1].id, running.id, finished[-2].id]
    assert await store.prune_instances(job.id, keep=2) == 0
    # 0 (or less) keeps the whole history, as the scheduler's history_keep=0 means.
    assert await store.prune_instances(job.id, keep=0) == 0
    assert await store.prune_instances(job.id, keep=-1) == 0
    assert len((await store.list_instances(job.id, limit=100)).items) == 3
    assert await store.prune_instances(job.id, keep=1) == 1
    assert [i.id for i in (await store.list_instances(job.id)).items] == [finished[-1].id, running.id]
    assert await store.get_instance(elsewhere.id) == elsewhere


# -- calendars, alarms --------------------------------------------------------------------------------


async def test_calendars(store: SqlStore) -> None:
    holidays = Calendar("ns", "holidays", frozenset({date(2030, 1, 1), date(2030, 12, 25)}), "days off")
    assert await store.put_calendar(holidays) == holidays
    assert await store.get_calendar("ns", "holidays") == holidays
    replaced = Calendar("ns", "holidays", frozenset({date(2031, 1, 1)}))
    await store.put_calendar(replaced)
    assert await store.get_calendar("ns", "holidays") == replaced
    await store.put_calendar(Calendar("ns", "empty", frozenset()))
    await store.put_calendar(Calendar("other", "x", frozenset()))
    assert [c.name for c in await store.list_calendars("ns")] == ["empty", "holidays"]
    assert await store.get_calendar("ns", "missing") is None


async def test_alarms(store: SqlStore) -> None:
    job = await add_job(store, "j")
    first = await store.record_alarm(
        namespace="ns",
        group_id="g",
        job_id=job.id,
        instance_id=7,
        kind="timeout",
        channel="webhook",
        message="too slow",
        delivered=True,
        detail={"status": 500, "tries": [1, 2]},
    )
    second = await store.record_alarm(
        namespace="ns",
        group_id="g",
        job_id=job.id,
        instance_id=None,
        kind="failure",
        channel="sms",
        message="failed",
        delivered=False,
    )
    await store.record_alarm(
        namespace="ns", group_id="g", job_id=job.id + 1, instance_id=None, kind="failure", channel="sms",
        message="x", delivered=True,
    )  # fmt: skip
    assert first.created_at.tzinfo is UTC and second.detail == {}
    assert await store.list_alarms(job_id=job.id) == [second, first]
    assert len(await store.list_alarms()) == 3
    assert await store.list_alarms(job_id=job.id, limit=1) == [second]
    with pytest.raises(ValueError, match="detail"):
        await store.record_alarm(
            namespace="ns", group_id="g", job_id=job.id, instance_id=None, kind="failure", channel="sms",
            message="x", delivered=True, detail={"bad": object()},
        )  # fmt: skip


# -- datetimes, schema, migrations ------------------------------------------------------------------


async def test_datetimes_round_trip_aware_utc(store: SqlStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2030, 6, 1, 12, 30, 15, 123456, tzinfo=plus2)
    job = await add_job(store, "j", next_fire_time=local)
    assert job.next_fire_time == local and job.next_fire_time.tzinfo is UTC
    fetched = await store.get_job(job.id)
    assert fetched is not None and fetched.next_fire_time == local
    assert fetched.next_fire_time.tzinfo is UTC
    assert fetched.next_fire_time.hour == 10
    assert fetched.created_at is not None and fetched.created_at.tzinfo is UTC
    made = await store.create_instance(new_instance(job, schedule_time=local))
    got = await store.get_instance(made.id)
    assert got is not None and got.schedule_time == local and got.schedule_time.tzinfo is UTC
    assert got.created_at.tzinfo is UTC
    # Comparisons happen in UTC whatever zone the caller uses.
    assert [j.id for j in await store.due_jobs(local.astimezone(timezone(timedelta(hours=-5))), 10)] == [
        job.id
    ]
    assert await store.due_jobs(local - timedelta(microseconds=1), 10) == []
    with pytest.raises(ValueError, match="next_fire_time"):
        await add_job(store, "naive", next_fire_time=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="now"):
        await store.due_jobs(datetime(2030, 1, 1), 10)


async def test_migrations_are_idempotent(store: SqlStore, store_url: str) -> None:
    job = await add_job(store, "survivor")
    await store.start()  # a started store ignores a second start
    again = SqlStore(store_url)
    await again.start()
    try:
        assert await again.get_job(job.id) == job
    finally:
        await again.close()
    await store.close()
    await store.start()  # and may be started again after close
    assert await store.find_job("ns", "g", "survivor") == job


async def test_schema_matches_table_definitions(store: SqlStore) -> None:
    def compare(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(compare) == []


async def test_trigger_queries_use_the_due_index(store: SqlStore) -> None:
    for i in range(20):
        await add_job(store, f"j{i}", next_fire_time=T0 + i * MINUTE, enabled=i % 2 == 0)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await store.next_due_time()
        await store.due_jobs(T0 + 5 * MINUTE, 10)
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", capture)
    queries = [(s, p) for s, p in seen if "sx_jobs" in s]
    assert len(queries) == 2
    async with store.engine.connect() as conn:
        for statement, parameters in queries:
            if store.dialect == "sqlite":
                rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                plan = " ".join(str(r[-1]) for r in rows)
            else:
                # Tiny tables favour a scan; forbid it to show the index matches the query's predicate.
                await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                rows = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
                plan = " ".join(str(r[0]) for r in rows)
            assert "ix_sx_jobs_due" in plan, plan


# -- URLs ---------------------------------------------------------------------------------------------


def test_urls_get_async_drivers(tmp_path: Any) -> None:
    assert normalize_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    assert sqlite_url(tmp_path).endswith(f"{tmp_path}/scheduler.db")
    assert sqlite_url(tmp_path).startswith("sqlite+aiosqlite:////")
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        SqlStore("mysql://root:secret@h/db")
    with pytest.raises(ValueError, match="not a database URL"):
        SqlStore("no url at all")


async def test_in_memory_sqlite() -> None:
    store = SqlStore("sqlite+aiosqlite://")
    await store.start()
    try:
        job = await add_job(store, "m")
        results = await asyncio.gather(*(store.get_job(job.id) for _ in range(5)))
        assert results == [job] * 5
    finally:
        await store.close()
