"""ListAlarms over real HTTP, on SQLite and PostgreSQL: alarms recorded by the real AlarmRouter (one
delivered to the log, one refused by a closed port, one naming a channel the scheduler lacks), then
filtered, paged, scoped to their group, signed, and refused when a parameter is bad."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.scheduler.jobs import AlarmRouter, LogChannel, WebhookChannel
from sx.scheduler.store import Alarm
from tests.scheduler.api.test_harness import AcsAuth, Api, running_api

ADDR = {"namespace": "ns1", "groupId": "g1"}
PATH = "/openapi/v1/alarm/list"


def _closed_port_url() -> str:
    # A port that was just free: nothing listens, so the POST is refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/alarms"


@pytest.fixture
async def api(tmp_path: Path, store_url: str) -> AsyncIterator[Api]:
    async with running_api(tmp_path, store_url=store_url) as api:
        await api.setup()
        await api.ok("/openapi/v1/group/create", namespace="ns1", groupId="g2")
        yield api


async def _raise_alarms(api: Api) -> tuple[int, int, list[Alarm]]:
    """Job ``logged`` (sendChannel log) alarms twice, ``hooked`` (webhook to a closed port) once, and
    a job of group g2 (sendChannel sms, which this router lacks) once; returns g1's two job ids and
    g1's alarms oldest first."""
    router = AlarmRouter(
        {"log": LogChannel(), "webhook": WebhookChannel(_closed_port_url(), attempts=1)}, api.store
    )
    logged = await api.create_job(name="logged", sendChannel="log", failEnable=True, maxConcurrency=5)
    hooked = await api.create_job(name="hooked", sendChannel="webhook", failEnable=True)
    other = await api.create_job(group="g2", name="other", sendChannel="sms", failEnable=True)
    instance_id = await api.ok("/openapi/v1/job/execute", **ADDR, jobId=logged)
    instance = await api.store.get_instance(instance_id)
    logged_job = await api.service.get_job("ns1", "g1", logged)
    first = await router.alarm("failure", logged_job, instance, "it failed")
    second = await router.alarm("timeout", logged_job, None, "too slow")
    third = await router.alarm("failure", await api.service.get_job("ns1", "g1", hooked), None, "it failed")
    await router.alarm("failure", await api.service.get_job("ns1", "g2", other), None, "elsewhere")
    return logged, hooked, [first, second, third]


async def test_the_history_lists_every_alarm_newest_first_with_its_outcome(api: Api) -> None:
    logged, hooked, (first, second, third) = await _raise_alarms(api)
    data = await api.ok(PATH, **ADDR)
    assert (data["total"], data["pageNum"], data["pageSize"]) == (3, 1, 20)
    assert [a["alarmId"] for a in data["alarms"]] == [third.id, second.id, first.id]
    newest, middle, oldest = data["alarms"]
    assert oldest == {
        "alarmId": first.id,
        "time": first.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "jobId": logged,
        "instanceId": first.instance_id,
        "kind": "failure",
        "channel": "log",
        "message": "it failed",
        "delivered": True,
        "error": "",
    }
    assert first.instance_id is not None and middle["instanceId"] is None and middle["kind"] == "timeout"
    assert newest["jobId"] == hooked and newest["channel"] == "webhook" and not newest["delivered"]
    assert newest["error"].startswith("POST http://127.0.0.1:") and "after 1 attempts" in newest["error"]
    (elsewhere,) = (await api.ok(PATH, namespace="ns1", groupId="g2"))["alarms"]
    assert not elsewhere["delivered"] and "no alarm channel named 'sms'" in elsewhere["error"]


async def test_filters_by_job_outcome_and_time(api: Api) -> None:
    logged, hooked, (first, second, third) = await _raise_alarms(api)

    async def ids(**filters: object) -> list[int]:
        return [a["alarmId"] for a in (await api.ok(PATH, **ADDR, **filters))["alarms"]]

    assert await ids(jobId=logged) == [second.id, first.id]
    assert await ids(jobId=hooked, delivered="false") == [third.id]
    assert await ids(delivered="true") == [second.id, first.id]
    assert await ids(delivered="false") == [third.id]
    assert await ids(jobId=logged + hooked + 1000) == []
    start_ms = int(first.created_at.timestamp() * 1000)  # floored: the first alarm is inside
    assert await ids(startTime=start_ms) == [third.id, second.id, first.id]
    assert await ids(endTime=start_ms - 1) == []
    assert await ids(startTime="2000-01-01 00:00:00", endTime="2000-01-02 00:00:00") == []
    assert await ids(startTime="2000-01-01 00:00:00", endTime="9999-01-01 00:00:00", jobId=hooked) == [
        third.id
    ]


async def test_pages(api: Api) -> None:
    _, _, (first, second, third) = await _raise_alarms(api)
    pages = [await api.ok(PATH, **ADDR, pageNum=n, pageSize=2) for n in (1, 2, 3)]
    assert [[a["alarmId"] for a in p["alarms"]] for p in pages] == [[third.id, second.id], [first.id], []]
    assert {p["total"] for p in pages} == {3} and [p["pageNum"] for p in pages] == [1, 2, 3]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 101}, "pageSize"),
        ({"pageNum": 0}, "pageNum"),
        ({"pageNum": "two"}, "pageNum"),
        ({"jobId": "abc"}, "jobId"),
        ({"jobId": 0}, "jobId"),
        ({"delivered": "maybe"}, "delivered"),
        ({"startTime": "yesterday"}, "startTime"),
        ({"startTime": "2030-01-02 00:00:00", "endTime": "2030-01-01 00:00:00"}, "endTime"),
    ],
)
async def test_bad_parameters_are_a_400_naming_the_field(
    api: Api, params: dict[str, object], field: str
) -> None:
    message = await api.error(PATH, 400, **ADDR, **params)
    assert field in message


async def test_unknown_group_or_namespace_is_a_404_and_a_key_must_sign(api: Api) -> None:
    assert "groupId" in await api.error(PATH, 404, namespace="ns1", groupId="nope")
    assert "namespace" in await api.error(PATH, 404, namespace="nope", groupId="g1")
    await api.error(PATH, 400, groupId="g1")
    created = await api.ok("/openapi/v1/accesskey/create", namespace="ns1")
    auth = AcsAuth(created["accessKeyId"], created["accessKeySecret"], api.clock)
    status, body = await api.call(PATH, ADDR)
    assert status == 401, body
    status, body = await api.call(PATH, ADDR, method="GET", auth=auth)
    assert status == 200 and body["data"]["total"] == 0, body
