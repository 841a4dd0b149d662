"""Trigger engine edge cases: a fixed-rate job's misfire, the autumn daylight-saving hour, and the
SQLite store's journal mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sx.processors import JobSpec, MisfirePolicy, cron, fixed_rate
from sx.scheduler._clock import ManualClock
from sx.scheduler.store import Store
from sx.scheduler.store.sql import SqlStore, sqlite_url
from tests.scheduler.jobs.test_triggers import T0, Harness, add_job, all_instances, prepare


@pytest.mark.parametrize("policy", [MisfirePolicy.RUN_ONCE, MisfirePolicy.SKIP])
async def test_fixed_rate_misfire_after_downtime(
    store: Store, policy: MisfirePolicy, caplog: pytest.LogCaptureFixture
) -> None:
    await prepare(store)
    clock = ManualClock(T0)
    spec = JobSpec(class_name="demo:Noop", name="rate", schedule=fixed_rate(60), misfire=policy)
    job = await add_job(store, clock, spec)
    first = job.next_fire_time
    assert first is not None
    # Down for an hour and a half minute: about sixty fires missed.
    await clock.advance(3600 + 30)
    latest_missed = first + timedelta(seconds=60 * ((clock.now() - first).total_seconds() // 60))
    h = Harness(store, clock)
    await h.engine.start()
    try:
        await h.settle()
        made = await all_instances(store, job.id)
        if policy == MisfirePolicy.RUN_ONCE:
            assert [i.schedule_time for i in made] == [latest_missed]  # once, not once per missed fire
            said = f"running once for {latest_missed.isoformat()}"
        else:
            assert made == []
            said = "skipped (misfirePolicy skip)"
        # Never silent: the missed fires are a warning, with what was done about them.
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(f"job {job.id} missed its fires since" in m and said in m for m in warned), warned
        stored = await store.get_job(job.id)
        assert stored is not None and stored.next_fire_time == latest_missed + timedelta(seconds=60)
        await h.advance((latest_missed + timedelta(seconds=60) - clock.now()).total_seconds())  # on time
        after = await all_instances(store, job.id)
        assert len(after) == len(made) + 1
        assert after[-1].schedule_time == latest_missed + timedelta(seconds=60)
    finally:
        await h.engine.stop()


async def test_dst_fall_back_fires_once_at_the_standard_time_instant(store: Store) -> None:
    # 2030-10-27 in Berlin: 02:30 happens twice (CEST, then CET); Quartz fires once, at the later one.
    await prepare(store)
    berlin = ZoneInfo("Europe/Berlin")
    clock = ManualClock(datetime(2030, 10, 26, 12, tzinfo=UTC))
    h = Harness(store, clock)
    spec = JobSpec(
        class_name="demo:Noop", name="autumn", schedule=cron("0 30 2 * * ?"), time_zone="Europe/Berlin"
    )
    job = await add_job(store, clock, spec)
    await h.engine.start()
    try:
        for _ in range(3):
            await h.advance(86400)
    finally:
        await h.engine.stop()
    made = [i.schedule_time for i in await all_instances(store, job.id)]
    assert made == [
        datetime(2030, 10, 27, 1, 30, tzinfo=UTC),  # 02:30 CET; 00:30 UTC (02:30 CEST) does not fire
        datetime(2030, 10, 28, 2, 30, tzinfo=berlin).astimezone(UTC),
        datetime(2030, 10, 29, 2, 30, tzinfo=berlin).astimezone(UTC),
    ]


async def test_sqlite_store_runs_in_wal_mode(tmp_path: Path) -> None:
    store = SqlStore(sqlite_url(tmp_path))
    await store.start()
    try:
        async with store._read() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
    finally:
        await store.close()
    assert str(mode).lower() == "wal"
