"""Instance endpoints over real HTTP: kill, getList (10 most recent), get, and the list extension."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from sx.processors import InstanceStatus
from sx.scheduler.store import InstanceChange
from tests.scheduler.api.test_harness import CRON_JOB, Api, running_api

ADDR = {"namespace": "ns1", "groupId": "g1"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        await api.setup()
        yield api


async def _execute(api: Api, job_id: int, count: int, *, step: float = 60) -> list[int]:
    ids = []
    for _ in range(count):
        ids.append(await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id))
        await api.clock.advance(step)
    return ids


async def test_get_list_returns_the_ten_most_recent_newest_first(api: Api) -> None:
    job_id = await api.create_job(maxConcurrency=100)
    ids = await _execute(api, job_id, 12)
    listed = await api.ok("/openapi/v1/instance/getList", jobId=job_id)
    assert [d["instanceId"] for d in listed] == list(reversed(ids))[:10]
    with_address = await api.ok("/openapi/v1/instance/getList", **ADDR, jobId=job_id)
    assert with_address == listed
    await api.error("/openapi/v1/instance/getList", 404, namespace="ns1", groupId="other", jobId=job_id)


async def test_instance_detail_shape_and_dates_in_the_jobs_zone(api: Api) -> None:
    job_id = await api.create_job(
        timeZone="Asia/Shanghai", **{k: v for k, v in CRON_JOB.items() if k != "name"}
    )
    [instance_id] = await _execute(api, job_id, 1)
    detail = await api.ok("/openapi/v1/instance/get", **ADDR, jobId=job_id, jobInstanceId=instance_id)
    assert detail == {
        "instanceId": instance_id,
        "jobId": job_id,
        "status": 1,
        "startDate": "",
        "endDate": "",
        "scheduleDate": "2030-01-01 08:00:00",  # 00:00 UTC in Shanghai
        "dataDate": "2030-01-01 08:00:00",
        "executor": "",
        "workAddr": "",
        "result": "",
        "progress": "",
        "timeType": 1,
        "triggerType": 3,
    }
    start = api.clock.now()
    await api.store.update_instance(
        instance_id,
        InstanceChange(
            status=InstanceStatus.SUCCESS,
            start_time=start,
            end_time=start + timedelta(seconds=75),
            worker_addr="10.0.0.1:7001",
            executor="w1",
            result="done",
        ),
    )
    detail = await api.ok("/openapi/v1/instance/get", **ADDR, jobId=job_id, jobInstanceId=instance_id)
    assert detail["startDate"] == "2030-01-01 08:01:00" and detail["endDate"] == "2030-01-01 08:02:15"
    assert (detail["status"], detail["workAddr"], detail["result"]) == (4, "10.0.0.1:7001", "done")


async def test_default_zone_applies_to_jobs_without_one(tmp_path: Path) -> None:
    async with running_api(tmp_path, default_tz="America/New_York") as api:
        await api.setup()
        job_id = await api.create_job()
        [instance_id] = await _execute(api, job_id, 1)
        detail = await api.ok("/openapi/v1/instance/get", **ADDR, jobId=job_id, jobInstanceId=instance_id)
        assert detail["scheduleDate"] == "2029-12-31 19:00:00"


async def test_get_instance_of_another_job_is_not_found(api: Api) -> None:
    first, second = await api.create_job(name="a"), await api.create_job(name="b")
    [instance_id] = await _execute(api, first, 1)
    message = await api.error(
        "/openapi/v1/instance/get", 404, **ADDR, jobId=second, jobInstanceId=instance_id
    )
    assert f"instanceId={instance_id}" in message
    assert "jobInstanceId" in await api.error("/openapi/v1/instance/get", 400, **ADDR, jobId=first)


async def test_kill_waiting_instance_fails_it(api: Api) -> None:
    job_id = await api.create_job()
    [instance_id] = await _execute(api, job_id, 1)
    await api.ok("/openapi/v1/instance/kill", **ADDR, jobId=job_id, instanceId=instance_id)
    instance = await api.store.get_instance(instance_id)
    assert instance is not None and instance.status == InstanceStatus.FAILED
    assert instance.result.startswith("killed")
    assert [i.id for i, _ in api.hooks.stopped] == [instance_id]
    # Finished by the service itself, so the rest of the scheduler hears of its end as usual.
    assert [(i.id, i.status) for i in api.hooks.finished] == [(instance_id, InstanceStatus.FAILED)]
    assert "already finished" in await api.error(
        "/openapi/v1/instance/kill", 409, **ADDR, jobId=job_id, instanceId=instance_id
    )


async def test_kill_running_instance_asks_its_workers(api: Api) -> None:
    job_id = await api.create_job()
    [instance_id] = await _execute(api, job_id, 1)
    await api.store.update_instance(instance_id, InstanceChange(status=InstanceStatus.RUNNING))
    await api.error("/openapi/v1/instance/kill", 409, **ADDR, jobId=job_id, instanceId=instance_id)
    api.hooks.stop_result = True
    await api.ok("/openapi/v1/instance/kill", **ADDR, jobId=job_id, instanceId=instance_id)
    assert len(api.hooks.stopped) == 2
    assert api.hooks.finished == []  # the dispatcher finishes it and tells the lifecycle
    instance = await api.store.get_instance(instance_id)
    assert (
        instance is not None and instance.status == InstanceStatus.RUNNING
    )  # the dispatcher records the end


async def test_instance_list_extension_filters_and_pages(api: Api) -> None:
    job_id = await api.create_job(maxConcurrency=100)
    ids = await _execute(api, job_id, 6, step=3600)  # 00:00, 01:00, ... 05:00 UTC
    await api.store.update_instance(ids[0], InstanceChange(status=InstanceStatus.SUCCESS))
    page = await api.ok("/openapi/v1/instance/list", **ADDR, jobId=job_id, pageNum=1, pageSize=4)
    assert page["total"] == 6 and [d["instanceId"] for d in page["instances"]] == ids[::-1][:4]
    waiting = await api.ok("/openapi/v1/instance/list", **ADDR, jobId=job_id, status="1,3")
    assert waiting["total"] == 5
    ranged = await api.ok(
        "/openapi/v1/instance/list",
        **ADDR,
        jobId=job_id,
        startTime="2030-01-01 01:00:00",
        endTime=str(int((api.clock.now() - timedelta(hours=3)).timestamp() * 1000)),
    )
    assert [d["instanceId"] for d in ranged["instances"]] == [ids[3], ids[2], ids[1]]
    assert "status" in await api.error("/openapi/v1/instance/list", 400, **ADDR, jobId=job_id, status="7")
    assert "startTime" in await api.error(
        "/openapi/v1/instance/list", 400, **ADDR, jobId=job_id, startTime="x"
    )
