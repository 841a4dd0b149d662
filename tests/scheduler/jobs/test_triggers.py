"""The trigger engine on a real store, driven by a manual clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sx.processors import (
    InstanceStatus,
    JobSpec,
    MisfirePolicy,
    TimeType,
    TriggerType,
    api,
    cron,
    fixed_rate,
    second_delay,
)
from sx.scheduler._clock import ManualClock
from sx.scheduler.jobs._timing import next_fire_time
from sx.scheduler.jobs._triggers import TriggerEngine, rejected_result
from sx.scheduler.store import Calendar, Group, Instance, Job, Namespace, NewInstance, Store
from sx.scheduler.store.sql import SqlStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)
NS, GROUP = "ns", "g"


async def eventually(predicate: Callable[[], bool], *, within: float = 30.0) -> None:
    """Poll until ``predicate`` holds (real time), failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


async def prepare(store: Store) -> None:
    await store.create_namespace(Namespace(id=NS, name=NS))
    await store.create_group(Group(namespace=NS, group_id=GROUP, app_key="k"))


async def add_job(
    store: Store,
    clock: ManualClock,
    spec: JobSpec,
    *,
    enabled: bool = True,
    calendar: Calendar | None = None,
) -> Job:
    first = next_fire_time(spec, clock.now(), default_tz=UTC, calendar=calendar) if enabled else None
    return await store.create_job(
        namespace=NS, group_id=GROUP, spec=spec, enabled=enabled, managed=False, next_fire_time=first
    )


async def all_instances(store: Store, job_id: int) -> list[Instance]:
    page = await store.list_instances(job_id, limit=10000)
    return sorted(page.items, key=lambda i: i.id)


class Harness:
    """An engine plus the instances it handed over."""

    def __init__(
        self, store: Store, clock: ManualClock, *, batch_size: int = 2000, idle_poll: float = 1.0
    ) -> None:
        self.store = store
        self.clock = clock
        self.created: list[Instance] = []
        self.misfires: list[MisfirePolicy] = []
        self.engine = TriggerEngine(
            store,
            clock=clock,
            default_tz=UTC,
            on_created=self._on_created,
            idle_poll=idle_poll,
            batch_size=batch_size,
            on_misfire=self.misfires.append,
        )

    async def _on_created(self, instances: list[Instance]) -> None:
        self.created.extend(instances)

    async def settle(self) -> None:
        """Wait until the engine has fired everything due at the clock's current time."""
        now = self.clock.now()
        await eventually(lambda: self.engine.caught_up_to is not None and self.engine.caught_up_to >= now)

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)
        await self.settle()


@pytest.fixture
async def harness(store: Store) -> AsyncIterator[Harness]:
    await prepare(store)
    h = Harness(store, ManualClock(T0))
    await h.engine.start()
    await h.settle()
    yield h
    await h.engine.stop()


async def test_cron_jobs_fire_at_their_times(harness: Harness) -> None:
    job = await add_job(
        harness.store,
        harness.clock,
        JobSpec(
            class_name="demo:Noop", name="every-minute", schedule=cron("0 * * * * ?"), max_concurrency=10
        ),
    )
    harness.engine.wake()
    for _ in range(3):
        await harness.advance(60)
    made = await all_instances(harness.store, job.id)
    assert [i.schedule_time for i in made] == [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
    assert all(i.status == InstanceStatus.WAITING for i in made)
    assert all(i.trigger_type == TriggerType.SCHEDULED and i.time_type == TimeType.CRON for i in made)
    assert [i.id for i in harness.created] == [i.id for i in made]
    assert (await harness.store.get_job(job.id)).next_fire_time == T0 + timedelta(minutes=4)  # type: ignore[union-attr]


async def test_not_fired_before_due(harness: Harness) -> None:
    job = await add_job(
        harness.store, harness.clock, JobSpec(class_name="demo:Noop", name="j", schedule=cron("0 * * * * ?"))
    )
    harness.engine.wake()
    await harness.advance(59)
    assert await all_instances(harness.store, job.id) == []


async def test_fixed_rate(harness: Harness) -> None:
    job = await add_job(
        harness.store, harness.clock, JobSpec(class_name="demo:Noop", name="rate", schedule=fixed_rate(10))
    )
    harness.engine.wake()
    for _ in range(3):
        await harness.advance(10)
    made = await all_instances(harness.store, job.id)
    assert [i.schedule_time for i in made] == [T0 + timedelta(seconds=s) for s in (10, 20, 30)]
    assert all(i.time_type == TimeType.FIXED_RATE for i in made)


async def test_second_delay_fires_once_until_armed_again(harness: Harness) -> None:
    job = await add_job(
        harness.store, harness.clock, JobSpec(class_name="demo:Noop", name="delay", schedule=second_delay(5))
    )
    harness.engine.wake()
    await harness.advance(5)
    await harness.advance(30)
    made = await all_instances(harness.store, job.id)
    assert len(made) == 1 and made[0].schedule_time == T0 + timedelta(seconds=5)
    assert (await harness.store.get_job(job.id)).next_fire_time is None  # type: ignore[union-attr]


async def test_api_and_disabled_jobs_never_fire_by_time(harness: Harness) -> None:
    api_job = await add_job(
        harness.store, harness.clock, JobSpec(class_name="demo:Noop", name="api", schedule=api())
    )
    off = await add_job(
        harness.store,
        harness.clock,
        JobSpec(class_name="demo:Noop", name="off", schedule=fixed_rate(1)),
        enabled=False,
    )
    harness.engine.wake()
    for _ in range(5):
        await harness.advance(1)
    assert await all_instances(harness.store, api_job.id) == []
    assert await all_instances(harness.store, off.id) == []


async def test_calendar_days_only(harness: Harness) -> None:
    calendar = Calendar(namespace=NS, name="work", days=frozenset({date(2030, 1, 2), date(2030, 1, 4)}))
    await harness.store.put_calendar(calendar)
    spec = JobSpec(class_name="demo:Noop", name="cal", schedule=cron("0 0 9 * * ?"), calendar="work")
    job = await add_job(harness.store, harness.clock, spec, calendar=calendar)
    harness.engine.wake()
    for _ in range(5):
        await harness.advance(86400)
    made = await all_instances(harness.store, job.id)
    assert [i.schedule_time for i in made] == [
        datetime(2030, 1, 2, 9, tzinfo=UTC),
        datetime(2030, 1, 4, 9, tzinfo=UTC),
    ]


async def test_data_offset_sets_data_time(harness: Harness) -> None:
    spec = JobSpec(class_name="demo:Noop", name="offset", schedule=cron("0 0 * * * ?"), data_offset=-3600)
    job = await add_job(harness.store, harness.clock, spec)
    harness.engine.wake()
    await harness.advance(3600)
    (made,) = await all_instances(harness.store, job.id)
    assert made.schedule_time == T0 + timedelta(hours=1)
    assert made.data_time == T0


async def test_dst_spring_forward_job_skips_the_missing_time(store: Store) -> None:
    await prepare(store)
    berlin = ZoneInfo("Europe/Berlin")
    clock = ManualClock(datetime(2030, 3, 30, 12, tzinfo=UTC))
    h = Harness(store, clock)
    spec = JobSpec(
        class_name="demo:Noop", name="dst", schedule=cron("0 30 2 * * ?"), time_zone="Europe/Berlin"
    )
    job = await add_job(store, clock, spec)
    await h.engine.start()
    try:
        for _ in range(3):
            await h.advance(86400)
    finally:
        await h.engine.stop()
    made = await all_instances(store, job.id)
    assert [i.schedule_time for i in made] == [
        datetime(2030, 4, 1, 2, 30, tzinfo=berlin).astimezone(UTC),
        datetime(2030, 4, 2, 2, 30, tzinfo=berlin).astimezone(UTC),
    ]


@pytest.mark.parametrize("policy", [MisfirePolicy.RUN_ONCE, MisfirePolicy.SKIP])
async def test_misfire_after_downtime(store: Store, policy: MisfirePolicy) -> None:
    await prepare(store)
    clock = ManualClock(T0)
    spec = JobSpec(class_name="demo:Noop", name="m", schedule=cron("0 * * * * ?"), misfire=policy)
    job = await add_job(store, clock, spec)
    # The scheduler is down for an hour: no engine runs while the clock moves.
    await clock.advance(3600 + 30)
    h = Harness(store, clock)
    await h.engine.start()
    try:
        await h.settle()
        made = await all_instances(store, job.id)
        if policy == MisfirePolicy.RUN_ONCE:
            assert len(made) == 1
            assert made[0].schedule_time == T0 + timedelta(hours=1)
        else:
            assert made == []
        assert h.misfires == [policy]  # one decision for the hour of missed fires (a metric counts it)
        assert (await store.get_job(job.id)).next_fire_time == T0 + timedelta(hours=1, minutes=1)  # type: ignore[union-attr]
        await h.advance(30)
        after = await all_instances(store, job.id)
        assert after[-1].schedule_time == T0 + timedelta(hours=1, minutes=1)
        assert len(after) == len(made) + 1
    finally:
        await h.engine.stop()


async def test_small_lateness_is_not_a_misfire(store: Store) -> None:
    await prepare(store)
    clock = ManualClock(T0)
    job = await add_job(
        store,
        clock,
        JobSpec(class_name="demo:Noop", name="late", schedule=fixed_rate(10), misfire=MisfirePolicy.SKIP),
    )
    await clock.advance(12)  # 2 s late: within the grace
    h = Harness(store, clock)
    await h.engine.start()
    try:
        await h.settle()
    finally:
        await h.engine.stop()
    made = await all_instances(store, job.id)
    assert [i.schedule_time for i in made] == [T0 + timedelta(seconds=10)]
    assert (await store.get_job(job.id)).next_fire_time == T0 + timedelta(seconds=20)  # type: ignore[union-attr]
    assert h.misfires == []


@pytest.mark.parametrize("policy", [MisfirePolicy.RUN_ONCE, MisfirePolicy.SKIP])
async def test_fires_missed_within_the_grace_make_one_run_not_a_burst(
    store: Store, policy: MisfirePolicy, caplog: pytest.LogCaptureFixture
) -> None:
    await prepare(store)
    clock = ManualClock(T0)
    spec = JobSpec(class_name="demo:Noop", name="every-second", schedule=fixed_rate(1), misfire=policy)
    job = await add_job(store, clock, spec)
    # Down 4.5 s (less than the 5 s grace): the fires at T0+1 .. T0+4 are all due at the restart.
    await clock.advance(4.5)
    h = Harness(store, clock)
    await h.engine.start()
    try:
        await h.settle()
        made = await all_instances(store, job.id)
        # The latest one is on time and runs under either policy; the older ones are not a burst.
        assert [(i.schedule_time, i.status) for i in made] == [
            (T0 + timedelta(seconds=4), InstanceStatus.WAITING)
        ]
        assert (await store.get_job(job.id)).next_fire_time == T0 + timedelta(seconds=5)  # type: ignore[union-attr]
        said = "skipped (misfirePolicy skip)" if policy == MisfirePolicy.SKIP else "running once for"
        assert any(f"job {job.id} missed its fires since" in m and said in m for m in caplog.messages)
    finally:
        await h.engine.stop()


@pytest.mark.parametrize("policy", [MisfirePolicy.RUN_ONCE, MisfirePolicy.SKIP])
async def test_after_a_restart_a_fire_blocked_by_maxconcurrency_follows_the_misfire_policy(
    store: Store, policy: MisfirePolicy, caplog: pytest.LogCaptureFixture
) -> None:
    await prepare(store)
    clock = ManualClock(T0)
    spec = JobSpec(class_name="demo:Noop", name="blocked", schedule=fixed_rate(1), misfire=policy)
    job = await add_job(store, clock, spec)
    h = Harness(store, clock)
    h.engine = TriggerEngine(store, clock=clock, default_tz=UTC, on_created=h._on_created, recovery=10)
    await h.engine.start()
    try:
        await h.advance(1)  # fires T0+1: WAITING, as if no worker had come back yet
        for _ in range(3):
            await h.advance(1)
        made = await all_instances(store, job.id)
        assert [i.status for i in made] == [InstanceStatus.WAITING]
        said = f"not run (misfirePolicy {policy.value}): its instances from before a scheduler restart"
        assert sum(f"job {job.id}: fire at" in m and said in m for m in caplog.messages) == 3
        # Past the recovery window, an instance at the limit rejects fires as always.
        await h.advance(7)
        made = await all_instances(store, job.id)
        assert [i.status for i in made] == [InstanceStatus.WAITING, InstanceStatus.REJECTED]
        assert made[-1].schedule_time == T0 + timedelta(seconds=11)
    finally:
        await h.engine.stop()


async def test_while_a_group_changes_replica_a_fire_blocked_by_maxconcurrency_follows_the_misfire_policy(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await prepare(store)
    clock = ManualClock(T0)
    spec = JobSpec(class_name="demo:Noop", name="blocked", schedule=fixed_rate(1))
    job = await add_job(store, clock, spec)
    between_owners = {(job.namespace, job.group_id)}
    h = Harness(store, clock)
    h.engine = TriggerEngine(
        store,
        clock=clock,
        default_tz=UTC,
        on_created=h._on_created,
        group_recovering=lambda namespace, group_id: (namespace, group_id) in between_owners,
    )
    await h.engine.start()
    try:
        await h.advance(1)  # fires T0+1: WAITING, held by a worker that is moving to the new owner
        await h.advance(1)
        assert [i.status for i in await all_instances(store, job.id)] == [InstanceStatus.WAITING]
        assert any(f"job {job.id}: fire at" in m and "change of replica" in m for m in caplog.messages)
        between_owners.clear()  # the group settled on its new owner: the limit rejects as always
        await h.advance(1)
        made = await all_instances(store, job.id)
        assert [i.status for i in made] == [InstanceStatus.WAITING, InstanceStatus.REJECTED]
    finally:
        await h.engine.stop()


async def test_max_concurrency_rejects_with_reason(harness: Harness) -> None:
    spec = JobSpec(class_name="demo:Noop", name="busy", schedule=fixed_rate(10), max_concurrency=2)
    job = await add_job(harness.store, harness.clock, spec)
    harness.engine.wake()
    for _ in range(3):
        await harness.advance(10)
    made = await all_instances(harness.store, job.id)
    assert [i.status for i in made] == [
        InstanceStatus.WAITING,
        InstanceStatus.WAITING,
        InstanceStatus.REJECTED,
    ]
    assert made[2].result == rejected_result(2) == "rejected: maxConcurrency 2 reached"
    assert len(harness.created) == 2  # rejected instances are not handed to dispatch


async def test_many_jobs_due_together_fire_in_batches(store: Store) -> None:
    await prepare(store)
    clock = ManualClock(T0)
    jobs = [
        await add_job(
            store, clock, JobSpec(class_name="demo:Noop", name=f"j{n}", schedule=cron("0/10 * * * * ?"))
        )
        for n in range(25)
    ]
    h = Harness(store, clock, batch_size=4)
    await h.engine.start()
    try:
        await h.advance(10)
        await h.advance(10)
    finally:
        await h.engine.stop()
    for job in jobs:
        made = await all_instances(store, job.id)
        # maxConcurrency 1 with nobody running them: the second is rejected, but it is created.
        assert [i.schedule_time for i in made] == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]
    assert h.engine.fired == 50


async def test_wake_notices_a_new_job(store: Store) -> None:
    await prepare(store)
    # With a long idle poll, only wake() makes the engine look at the new job before an hour passes.
    h = Harness(store, ManualClock(T0), idle_poll=3600)
    await h.engine.start()
    try:
        await h.settle()
        job = await add_job(
            store, h.clock, JobSpec(class_name="demo:Noop", name="new", schedule=fixed_rate(5))
        )
        h.engine.wake()
        await h.advance(5)
    finally:
        await h.engine.stop()
    assert len(await all_instances(store, job.id)) == 1


async def test_two_engines_on_postgres_never_double_fire(postgres_url: str) -> None:
    first, second = SqlStore(postgres_url), SqlStore(postgres_url)
    await first.start()
    await second.start()
    try:
        await prepare(first)
        clock = ManualClock(T0)
        jobs = [
            await add_job(
                first,
                clock,
                JobSpec(
                    class_name="demo:Noop", name=f"pg{n}", schedule=cron("* * * * * ?"), max_concurrency=100
                ),
            )
            for n in range(40)
        ]
        a, b = Harness(first, clock), Harness(second, clock)
        await a.engine.start()
        await b.engine.start()
        try:
            for _ in range(5):
                await clock.advance(1)
                await a.settle()
                await b.settle()
        finally:
            await a.engine.stop()
            await b.engine.stop()
        for job in jobs:
            made = await all_instances(first, job.id)
            assert sorted(i.schedule_time for i in made) == [T0 + timedelta(seconds=s) for s in range(1, 6)]
        assert a.engine.fired + b.engine.fired == 200
        assert len(a.created) + len(b.created) == 200
    finally:
        await first.close()
        await second.close()


async def test_retry_instance_created_by_store_is_not_refired(harness: Harness) -> None:
    # Instances made outside the engine (API, retries) do not disturb the job's own schedule.
    job = await add_job(
        harness.store,
        harness.clock,
        JobSpec(class_name="demo:Noop", name="mix", schedule=fixed_rate(10), max_concurrency=5),
    )
    await harness.store.create_instance(
        NewInstance(
            job_id=job.id,
            namespace=NS,
            group_id=GROUP,
            status=InstanceStatus.WAITING,
            trigger_type=TriggerType.API,
            time_type=TimeType.FIXED_RATE,
            schedule_time=T0,
            data_time=T0,
        )
    )
    harness.engine.wake()
    await harness.advance(10)
    made = await all_instances(harness.store, job.id)
    assert [i.trigger_type for i in made] == [TriggerType.API, TriggerType.SCHEDULED]


async def test_job_changed_while_its_fire_is_prepared_uses_the_new_definition(harness: Harness) -> None:
    spec = JobSpec(class_name="demo:Noop", name="changing", schedule=cron("0/10 * * * * ?"))
    job = await add_job(harness.store, harness.clock, spec)
    harness.engine.wake()
    await harness.advance(9.7)  # within the prefetch window: the fire at 10 s is loaded and planned
    await harness.store.update_job(job.id, spec=spec.model_copy(update={"data_offset": -60}))
    harness.engine.wake()
    await harness.advance(0.3)
    (made,) = await all_instances(harness.store, job.id)
    assert made.schedule_time == T0 + timedelta(seconds=10)
    assert made.data_time == T0 - timedelta(seconds=50)


async def test_prepared_fire_of_a_disabled_job_is_not_claimed(harness: Harness) -> None:
    job = await add_job(
        harness.store, harness.clock, JobSpec(class_name="demo:Noop", name="off", schedule=fixed_rate(10))
    )
    harness.engine.wake()
    await harness.advance(9.7)
    await harness.store.update_job(job.id, enabled=False)  # another replica's change: no wake here
    await harness.advance(0.3)
    assert await all_instances(harness.store, job.id) == []
