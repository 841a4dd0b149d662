"""Job endpoints over real HTTP: create, get, update, delete, enable, disable, execute, list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.processors import InstanceStatus, TriggerType
from tests.scheduler.api.test_harness import API_JOB, CRON_JOB, Api, running_api

ADDR = {"namespace": "ns1", "groupId": "g1"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        await api.setup()
        yield api


@pytest.mark.parametrize(
    ("method", "style"), [("GET", "query"), ("POST", "query"), ("POST", "form"), ("POST", "json")]
)
async def test_create_and_get_in_every_parameter_style(api: Api, style: str, method: str) -> None:
    params = {**ADDR, **CRON_JOB, "maxConcurrency": 3, "timeoutEnable": True}
    if style == "json":
        params["contactInfo"] = [{"userPhone": "123", "userName": "ann"}]
    status, body = await api.call("/openapi/v1/job/create", params, style=style, method=method)
    assert status == 200, body
    job_id = body["data"]
    assert isinstance(job_id, int)
    for path in ("/openapi/job/v1/get", "/openapi/v1/job/get"):
        status, body = await api.call(path, {**ADDR, "jobId": job_id}, style=style, method=method)
        info = body["data"]
        assert info["jobId"] == job_id and info["status"] == 1 and info["managed"] is False
        assert info["name"] == "nightly" and info["maxConcurrency"] == 3
        assert info["timeConfig"] == {
            "timeType": 1,
            "timeExpression": "0 0 2 * * ?",
            "calendar": "",
            "dataOffset": 0,
        }
        assert info["jobMonitorInfo"]["monitorConfig"]["timeoutEnable"] is True
        if style == "json":
            assert info["jobMonitorInfo"]["contactInfo"] == [{"userPhone": "123", "userName": "ann"}]


async def test_body_wins_over_query(api: Api) -> None:
    response = await api.client.post(
        "/openapi/v1/job/create", params={**ADDR, **API_JOB, "name": "from-query"}, data={"name": "from-body"}
    )
    job_id = response.json()["data"]
    assert (await api.ok("/openapi/job/v1/get", **ADDR, jobId=job_id))["name"] == "from-body"


async def test_create_sets_next_fire_time_and_wakes_triggers(api: Api) -> None:
    wakes = api.hooks.wakes
    job_id = await api.create_job(**CRON_JOB)
    job = await api.store.get_job(job_id)
    assert job is not None and job.next_fire_time is not None
    assert job.next_fire_time.hour == 2 and job.next_fire_time > api.clock.now()
    assert api.hooks.wakes > wakes
    api_job = await api.store.get_job(await api.create_job())
    assert api_job is not None and api_job.next_fire_time is None


async def test_partial_update_keeps_absent_fields(api: Api) -> None:
    job_id = await api.create_job(**CRON_JOB, description="first", parameters="p=1")
    assert await api.ok("/openapi/v1/job/update", **ADDR, jobId=job_id, description="second") is None
    info = await api.ok("/openapi/job/v1/get", **ADDR, jobId=job_id)
    assert info["description"] == "second"
    assert info["parameters"] == "p=1" and info["timeConfig"]["timeExpression"] == "0 0 2 * * ?"


async def test_update_schedule_moves_next_fire_time(api: Api) -> None:
    job_id = await api.create_job(**CRON_JOB)
    await api.ok("/openapi/v1/job/update", **ADDR, jobId=job_id, timeExpression="0 30 5 * * ?")
    job = await api.store.get_job(job_id)
    assert job is not None and job.next_fire_time is not None
    assert (job.next_fire_time.hour, job.next_fire_time.minute) == (5, 30)


async def test_update_with_invalid_field_changes_nothing(api: Api) -> None:
    job_id = await api.create_job(**CRON_JOB)
    before = await api.ok("/openapi/job/v1/get", **ADDR, jobId=job_id)
    message = await api.error(
        "/openapi/v1/job/update", 400, **ADDR, jobId=job_id, description="x", timeExpression="not a cron"
    )
    assert "timeExpression" in message and "not a cron" in message
    assert await api.ok("/openapi/job/v1/get", **ADDR, jobId=job_id) == before


async def test_managed_flag(api: Api) -> None:
    job_id = await api.create_job(managed=True)
    assert (await api.ok("/openapi/job/v1/get", **ADDR, jobId=job_id))["managed"] is True
    await api.ok("/openapi/v1/job/update", **ADDR, jobId=job_id, managed=False)
    assert (await api.ok("/openapi/job/v1/get", **ADDR, jobId=job_id))["managed"] is False


async def test_enable_disable(api: Api) -> None:
    job_id = await api.create_job(**CRON_JOB)
    await api.ok("/openapi/v1/job/disable", **ADDR, jobId=job_id)
    job = await api.store.get_job(job_id)
    assert job is not None and not job.enabled and job.next_fire_time is None
    assert (await api.ok("/openapi/job/v1/get", **ADDR, jobId=job_id))["status"] == 0
    await api.ok("/openapi/v1/job/enable", **ADDR, jobId=job_id)
    job = await api.store.get_job(job_id)
    assert job is not None and job.enabled and job.next_fire_time is not None


async def test_execute_creates_waiting_instance_and_hands_it_over(api: Api) -> None:
    job_id = await api.create_job()
    instance_id = await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id, instanceParameters="a b=c")
    instance = await api.store.get_instance(instance_id)
    assert instance is not None
    assert instance.status == InstanceStatus.WAITING and instance.trigger_type == TriggerType.API
    assert instance.instance_parameters == "a b=c"
    assert [i.id for i in api.hooks.created] == [instance_id]


async def test_execute_beyond_max_concurrency_is_rejected(api: Api) -> None:
    job_id = await api.create_job(maxConcurrency=1)
    await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id)
    status, body = await api.call("/openapi/v1/job/execute", {**ADDR, "jobId": job_id})
    assert status == 200 and "maxConcurrency 1" in body["message"]
    rejected = await api.store.get_instance(body["data"])
    assert rejected is not None and rejected.status == InstanceStatus.REJECTED
    assert rejected.result == "rejected: maxConcurrency 1 reached"
    assert len(api.hooks.created) == 1


async def test_delete_stops_active_instances_first(api: Api) -> None:
    job_id = await api.create_job()
    instance_id = await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id)
    await api.ok("/openapi/v1/job/delete", **ADDR, jobId=job_id)
    assert [i.id for i, _ in api.hooks.stopped] == [instance_id]
    assert await api.store.get_job(job_id) is None
    assert "jobId=" in await api.error("/openapi/job/v1/get", 404, **ADDR, jobId=job_id)


async def test_errors_name_the_field(api: Api) -> None:
    message = await api.error(
        "/openapi/v1/job/create", 400, **ADDR, **{**CRON_JOB, "timeExpression": "61 * * * * ?"}
    )
    assert "timeExpression" in message
    message = await api.error("/openapi/v1/job/create", 400, **ADDR, **{**API_JOB, "executeMode": "sideways"})
    assert "executeMode" in message and "sideways" in message
    message = await api.error("/openapi/v1/job/create", 400, **ADDR, **{**API_JOB, "maxConcurrency": "many"})
    assert "maxConcurrency" in message and "many" in message
    assert "groupId" in await api.error("/openapi/v1/job/create", 400, namespace="ns1", **API_JOB)
    assert "jobId" in await api.error("/openapi/job/v1/get", 400, **ADDR, jobId="abc")
    assert "jobId" in await api.error("/openapi/job/v1/get", 400, **ADDR, jobId=str(2**70))
    assert "jobId" in await api.error("/openapi/job/v1/get", 400, **ADDR)
    assert "jobId=999" in await api.error("/openapi/job/v1/get", 404, **ADDR, jobId=999)
    assert "groupId" in await api.error(
        "/openapi/v1/job/create", 404, namespace="ns1", groupId="nope", **API_JOB
    )
    assert "calendar" in await api.error(
        "/openapi/v1/job/create", 400, **ADDR, **{**CRON_JOB, "calendar": "workdays"}
    )
    assert await api.store.list_jobs("ns1", "g1") is not None
    assert (await api.store.list_jobs("ns1", "g1")).total == 0


async def test_duplicate_name_conflicts(api: Api) -> None:
    await api.create_job(name="same")
    assert "name" in await api.error("/openapi/v1/job/create", 409, **ADDR, **{**API_JOB, "name": "same"})
    other = await api.create_job(name="other")
    assert "same" in await api.error("/openapi/v1/job/update", 409, **ADDR, jobId=other, name="same")


async def test_job_of_another_namespace_or_group_is_not_found(api: Api) -> None:
    await api.setup("ns2", "g2")
    await api.ok("/openapi/v1/group/create", namespace="ns1", groupId="g3")
    job_id = await api.create_job()
    for namespace, group in (("ns2", "g2"), ("ns1", "g3"), ("ns2", "g1")):
        for path in ("/openapi/job/v1/get", "/openapi/v1/job/delete", "/openapi/v1/job/execute"):
            await api.error(path, 404, namespace=namespace, groupId=group, jobId=job_id)
    assert await api.store.get_job(job_id) is not None


async def test_list_jobs_pages_and_filters(api: Api) -> None:
    ids = [await api.create_job(name=f"job-{i:02d}") for i in range(7)]
    await api.create_job(name="other")
    page = await api.ok("/openapi/v1/job/list", **ADDR, pageNum=2, pageSize=3)
    assert page["total"] == 8 and page["pageNum"] == 2 and page["pageSize"] == 3
    assert [j["jobId"] for j in page["jobs"]] == ids[3:6]
    assert {"status", "managed", "timeConfig"} <= set(page["jobs"][0])
    found = await api.ok("/openapi/v1/job/list", **ADDR, name="job-03")
    assert [j["jobId"] for j in found["jobs"]] == [ids[3]]
    contains = await api.ok("/openapi/v1/job/list", **ADDR, nameContains="job-0", pageSize=100)
    assert contains["total"] == 7
    assert "pageSize" in await api.error("/openapi/v1/job/list", 400, **ADDR, pageSize=101)
    assert "pageNum" in await api.error("/openapi/v1/job/list", 400, **ADDR, pageNum=0)
