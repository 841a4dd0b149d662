"""Re-runs and backfills through the real OpenAPI (HTTP, SQLite and PostgreSQL) on a manual clock, with
the real trigger engine making the live fires and the real backfill driver starting the backfill's.

The backfill's fire times are checked against the instances the trigger engine itself made for the same
job over the same range (a zone with a DST change, a calendar with a gap, a dataOffset), so both come
from one evaluator walked two ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sx.processors import InstanceStatus, TriggerType
from sx.scheduler.jobs import BackfillDriver, TriggerEngine
from sx.scheduler.store import BackfillState, Calendar, Instance, InstanceChange
from sx.scheduler.store.sql import SqlStore
from tests.scheduler.api.test_harness import Api, running_api

BERLIN = ZoneInfo("Europe/Berlin")
ADDR = {"namespace": "ns1", "groupId": "g1"}
# Berlin goes from 02:00 to 03:00 on 2030-03-31; the calendar leaves out 2030-03-30.
DAYS = frozenset({date(2030, 3, 29), date(2030, 3, 31), date(2030, 4, 1)})
HOURLY: dict[str, Any] = {
    "name": "hourly", "timeType": 1, "timeExpression": "0 30 * * * ?", "timeZone": "Europe/Berlin",
    "calendar": "work", "dataOffset": -3600, "maxConcurrency": 1,
}  # fmt: skip


def berlin(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BERLIN).astimezone(UTC)


@pytest.fixture
async def api(tmp_path: Path, store_url: str) -> AsyncIterator[Api]:
    async with running_api(tmp_path, store_url=store_url) as api:
        await api.setup()
        await api.store.put_calendar(Calendar(namespace="ns1", name="work", days=DAYS))
        yield api


def _driver(api: Api, store: SqlStore | None = None) -> BackfillDriver:
    return BackfillDriver(store or api.store, clock=api.clock, hand_over=api.hooks.instance_created)


async def _live_fires(api: Api, job_id: int, until: datetime) -> list[Instance]:
    """Let the trigger engine fire the job at each of its due times up to ``until``."""
    made: list[Instance] = []

    async def collect(instances: list[Instance]) -> None:
        made.extend(instances)

    engine = TriggerEngine(api.store, clock=api.clock, default_tz=UTC, on_created=collect)
    while True:
        job = await api.store.get_job(job_id)
        assert job is not None and job.next_fire_time is not None
        if job.next_fire_time > until:
            return made
        await api.clock.set(job.next_fire_time)
        await engine.fire_due(job.next_fire_time)
        for instance in made:  # each ends, so maxConcurrency 1 never rejects the next fire
            await api.store.update_instance(instance.id, InstanceChange(status=InstanceStatus.SUCCESS))


async def _finish_created(api: Api, status: InstanceStatus) -> list[Instance]:
    done = list(api.hooks.created)
    api.hooks.created.clear()
    for instance in done:
        await api.store.update_instance(instance.id, InstanceChange(status=status, end_time=api.clock.now()))
    return done


async def test_a_backfill_runs_exactly_the_live_fire_times(api: Api) -> None:
    await api.clock.set(berlin("2030-03-29 00:00:00"))
    job_id = await api.create_job(**HOURLY)
    live = await _live_fires(api, job_id, berlin("2030-04-01 12:00:00"))
    start, end = "2030-03-30 20:00:00", "2030-03-31 06:00:00"  # data times, the job's zone
    expected = [i for i in live if berlin(start) <= i.data_time <= berlin(end)]
    # 31 March from 00:30 (data time 23:30 on the 30th) to 06:30, without 02:30 (the DST gap); the
    # 30th's fires are outside the calendar.
    assert [i.schedule_time.astimezone(BERLIN).hour for i in expected] == [0, 1, 3, 4, 5, 6]
    await api.clock.set(berlin("2030-04-02 00:00:00"))

    dry = await api.ok(
        "/openapi/v1/job/rerun", **ADDR, jobId=job_id, startDate=start, endDate=end, dryRun=True
    )
    assert dry["total"] == len(expected) and dry["skipped"] == 0
    shown = [f["scheduleDate"] for f in dry["fireTimes"]]
    assert shown == [i.schedule_time.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S") for i in expected]
    assert (await api.store.list_backfills("ns1", "g1")).total == 0  # a dry run stores nothing

    created = await api.ok(
        "/openapi/v1/job/rerun", **ADDR, jobId=job_id, startDate=start, endDate=end, concurrency=2
    )
    assert (created["state"], created["total"], created["pending"], created["concurrency"]) == (
        "running",
        len(expected),
        len(expected),
        2,
    )
    driver = _driver(api)
    ran: list[Instance] = []
    while await driver.advance(created["backfillId"]) or api.hooks.created:
        assert len(api.hooks.created) <= 2
        ran += await _finish_created(api, InstanceStatus.SUCCESS)
    assert [i.schedule_time for i in ran] == [i.schedule_time for i in expected]  # schedule order
    assert [i.data_time for i in ran] == [i.data_time for i in expected]
    assert {i.trigger_type for i in ran} == {TriggerType.DATA_RERUN}
    got = await api.ok("/openapi/v1/backfill/get", **ADDR, backfillId=created["backfillId"])
    assert (got["state"], got["done"], got["pending"], got["running"]) == ("finished", len(expected), 0, 0)

    # GetJobInstance shows the trigger type the original document defines for a data re-run.
    detail = await api.ok("/openapi/v1/instance/get", **ADDR, jobId=job_id, jobInstanceId=ran[0].id)
    assert (detail["triggerType"], detail["scheduleDate"]) == (2, "2030-03-31 00:30:00")
    assert detail["dataDate"] == "2030-03-30 23:30:00"
    listed = await api.ok("/openapi/v1/instance/getList", jobId=job_id)
    assert [d["triggerType"] for d in listed] == [2] * len(ran) + [1] * (10 - len(ran))


async def test_skip_successful_and_fixed_rate_anchor(api: Api) -> None:
    await api.clock.set(datetime(2030, 1, 1, tzinfo=UTC))
    job_id = await api.create_job(name="rate", timeType=3, timeExpression="600", maxConcurrency=1)
    live = await _live_fires(api, job_id, datetime(2030, 1, 1, 1, tzinfo=UTC))
    assert len(live) == 6
    await api.store.update_instance(live[1].id, InstanceChange(status=InstanceStatus.FAILED))
    await api.clock.set(datetime(2030, 1, 2, tzinfo=UTC))
    first, last = (int(i.schedule_time.timestamp() * 1000) for i in (live[0], live[-1]))
    data = await api.ok(
        "/openapi/v1/job/rerun", **ADDR, jobId=job_id, startDate=first, endDate=last, skipSuccessful=True,
        dryRun=True,
    )  # fmt: skip
    assert (data["total"], data["skipped"]) == (6, 5)
    assert [f["skip"] for f in data["fireTimes"]] == [True, False, True, True, True, True]


async def test_backfill_concurrency_live_fires_stop_and_resume(api: Api, store_url: str) -> None:
    await api.clock.set(datetime(2030, 1, 10, tzinfo=UTC))
    job_id = await api.create_job(name="daily", timeType=1, timeExpression="0 0 3 * * ?", maxConcurrency=1)
    created = await api.ok(
        "/openapi/v1/job/rerun", **ADDR, jobId=job_id, startDate="2030-01-01 00:00:00",
        endDate="2030-01-08 00:00:00", concurrency=2,
    )  # fmt: skip
    backfill_id = created["backfillId"]
    assert created["total"] == 7
    driver = _driver(api)
    assert await driver.advance(backfill_id) == 2
    first = list(api.hooks.created)
    assert [i.schedule_time.day for i in first] == [1, 2]
    assert await driver.advance(backfill_id) == 0  # the concurrency is taken

    # Live triggers keep their own maxConcurrency of 1: the backfill's two instances do not count.
    api.hooks.created.clear()
    executed = await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id)
    instance = await api.store.get_instance(executed)
    assert instance is not None and instance.status == InstanceStatus.WAITING
    await api.store.update_instance(executed, InstanceChange(status=InstanceStatus.RUNNING))
    # ... and the live instance leaves the backfill's room alone.
    api.hooks.created[:] = first
    await _finish_created(api, InstanceStatus.FAILED)
    assert await driver.advance(backfill_id) == 2
    assert [i.schedule_time.day for i in api.hooks.created] == [3, 4]

    stopped = await api.ok("/openapi/v1/backfill/stop", **ADDR, backfillId=backfill_id)
    assert (stopped["state"], stopped["failed"], stopped["running"], stopped["pending"]) == (
        "stopped",
        2,
        2,
        3,
    )
    message = await api.error("/openapi/v1/backfill/stop", 409, **ADDR, backfillId=backfill_id)
    assert "backfillId" in message and "stopped" in message
    assert await driver.advance(backfill_id) == 0

    # Resumed after a "restart": a new store and driver on the same database go on where it was.
    await _finish_created(api, InstanceStatus.SUCCESS)
    await api.store.set_backfill_state(backfill_id, BackfillState.RUNNING, only_if=BackfillState.STOPPED)
    restarted = SqlStore(store_url)
    await restarted.start()
    try:
        again = _driver(api, restarted)
        assert await again.advance_all() == 2
        assert [i.schedule_time.day for i in api.hooks.created] == [5, 6]
    finally:
        await restarted.close()
    fires = await api.ok("/openapi/v1/backfill/fires", **ADDR, backfillId=backfill_id)
    assert [f["state"] for f in fires["fires"]] == ["failed"] * 2 + ["done"] * 2 + ["running"] * 2 + [
        "pending"
    ]
    listed = await api.ok("/openapi/v1/backfill/list", **ADDR, jobId=job_id)
    assert (listed["total"], listed["backfills"][0]["backfillId"]) == (1, backfill_id)


async def test_backfill_refusals_name_the_field(api: Api) -> None:
    await api.clock.set(datetime(2031, 1, 1, tzinfo=UTC))
    job_id = await api.create_job(name="every-second", timeType=1, timeExpression="* * * * * ?")
    one_year = {"startDate": "2030-01-01 00:00:00", "endDate": "2030-12-31 23:59:59"}
    message = await api.error("/openapi/v1/job/rerun", 400, **ADDR, jobId=job_id, **one_year)
    assert "maxFireTimes" in message and "more than 10000 fire times" in message
    message = await api.error("/openapi/v1/job/rerun", 400, **ADDR, jobId=job_id, **one_year, maxFireTimes=0)
    assert "maxFireTimes" in message
    message = await api.error(
        "/openapi/v1/job/rerun",
        400,
        **ADDR,
        jobId=job_id,
        startDate="2030-01-02 00:00:00",
        endDate="2030-01-01 00:00:00",
    )
    assert "endDate" in message
    message = await api.error(
        "/openapi/v1/job/rerun",
        400,
        **ADDR,
        jobId=job_id,
        startDate="2030-01-01 00:00:00",
        endDate="2032-01-01 00:00:00",
    )
    assert "endDate" in message and "future" in message
    message = await api.error(
        "/openapi/v1/job/rerun", 400, **ADDR, jobId=job_id, endDate="2030-01-01 00:00:00"
    )
    assert "startDate" in message
    message = await api.error("/openapi/v1/job/rerun", 400, **ADDR, jobId=job_id, **one_year, concurrency=0)
    assert "concurrency" in message
    api_job = await api.create_job(name="api-only")
    message = await api.error("/openapi/v1/job/rerun", 400, **ADDR, jobId=api_job, **one_year)
    assert "jobId" in message and "only cron and fix_rate" in message
    assert "backfillId" in await api.error("/openapi/v1/backfill/get", 404, **ADDR, backfillId=99)


async def test_rerun_of_a_finished_instance(api: Api) -> None:
    job_id = await api.create_job(name="once", maxConcurrency=1)
    original_id = await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id, instanceParameters="p=1")
    message = await api.error(
        "/openapi/v1/instance/retry", 409, **ADDR, jobId=job_id, jobInstanceId=original_id
    )
    assert "instanceId" in message and "unfinished" in message
    await api.store.update_instance(original_id, InstanceChange(status=InstanceStatus.FAILED, result="boom"))
    original = await api.store.get_instance(original_id)
    assert original is not None

    blocker = await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id)
    message = await api.error(
        "/openapi/v1/instance/retry", 409, **ADDR, jobId=job_id, jobInstanceId=original_id
    )
    assert "jobId" in message and "maxConcurrency is 1" in message
    await api.store.update_instance(blocker, InstanceChange(status=InstanceStatus.SUCCESS))

    api.hooks.created.clear()
    rerun_id = await api.ok("/openapi/v1/instance/retry", **ADDR, jobId=job_id, instanceId=original_id)
    rerun = await api.store.get_instance(rerun_id)
    assert rerun is not None and [i.id for i in api.hooks.created] == [rerun_id]
    assert (rerun.trigger_type, rerun.status, rerun.rerun_of, rerun.retry_of) == (
        TriggerType.MANUAL_RERUN, InstanceStatus.WAITING, original_id, None
    )  # fmt: skip
    assert (rerun.schedule_time, rerun.data_time, rerun.instance_parameters) == (
        original.schedule_time, original.data_time, "p=1"
    )  # fmt: skip
    assert await api.store.get_instance(original_id) == original  # its history is unchanged
    detail = await api.ok("/openapi/v1/instance/get", **ADDR, jobId=job_id, jobInstanceId=rerun_id)
    assert (detail["triggerType"], detail["rerunOf"]) == (4, original_id)
    assert "instanceId" in await api.error(
        "/openapi/v1/instance/retry", 404, **ADDR, jobId=job_id, instanceId=999
    )


async def test_two_replicas_drive_one_backfill_without_doubles(api: Api, store_url: str) -> None:
    await api.clock.set(datetime(2030, 2, 1, tzinfo=UTC))
    job_id = await api.create_job(name="shared", timeType=1, timeExpression="0 0 * * * ?")
    created = await api.ok(
        "/openapi/v1/job/rerun", **ADDR, jobId=job_id, startDate="2030-01-01 00:00:00",
        endDate="2030-01-01 23:00:00", concurrency=3,
    )  # fmt: skip
    other = SqlStore(store_url)
    await other.start()
    try:
        drivers = [_driver(api), _driver(api, other)]
        ran: list[Instance] = []
        while True:
            started = await asyncio.gather(*(d.advance(created["backfillId"]) for d in drivers))
            running = len(api.hooks.created)
            assert running <= 3  # the concurrency holds across both
            if not any(started) and not running:
                break
            ran += await _finish_created(api, InstanceStatus.SUCCESS)
    finally:
        await other.close()
    times = [i.schedule_time for i in ran]
    assert len(times) == len(set(times)) == 24  # every hour of the day, each once
    got = await api.ok("/openapi/v1/backfill/get", **ADDR, backfillId=created["backfillId"])
    assert (got["state"], got["done"]) == ("finished", 24)
