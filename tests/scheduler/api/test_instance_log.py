"""GetInstanceLog over real HTTP, on SQLite and PostgreSQL: lines stored for an instance read back by
offset, filtered by level and subtask, followed (a long poll answered when a line is stored), marked
complete once the instance ended, and bad parameters refused naming the field."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from sx.processors import InstanceStatus
from sx.scheduler.jobs import LOG_SETTLE
from sx.scheduler.store import InstanceChange, NewLogLines
from tests.scheduler.api.test_harness import Api, running_api

ADDR = {"namespace": "ns1", "groupId": "g1"}
PATH = "/openapi/v1/instance/log"


@pytest.fixture
async def api(tmp_path: Path, store_url: str) -> AsyncIterator[Api]:
    async with running_api(tmp_path, store_url=store_url) as api:
        await api.setup()
        yield api


async def _instance(api: Api) -> tuple[int, int]:
    job_id = await api.create_job(name="logged")
    instance_id: int = await api.ok("/openapi/v1/job/execute", **ADDR, jobId=job_id)
    return job_id, instance_id


def _line(
    instance_id: int,
    api: Api,
    message: str,
    *,
    level: int = logging.INFO,
    task_id: int = 0,
    task_name: str = "",
) -> NewLogLines:
    now_ms = int(api.clock.now().timestamp() * 1000)
    return NewLogLines(instance_id, "w1", [now_ms], [level], [message], [task_id], [task_name])


async def test_lines_are_read_by_offset_and_filtered(api: Api) -> None:
    job_id, instance_id = await _instance(api)
    lines = [
        _line(instance_id, api, "root says hi"),
        _line(instance_id, api, "part a", task_id=2, task_name="parts"),
        _line(instance_id, api, "part b broke", level=logging.ERROR, task_id=3, task_name="parts"),
    ]
    await api.store.append_instance_logs("ns1", "g1", lines, max_lines=100)
    data = await api.ok(PATH, **ADDR, jobId=job_id, instanceId=instance_id)
    assert [(line["offset"], line["level"], line["message"]) for line in data["lines"]] == [
        (1, "INFO", "root says hi"),
        (2, "INFO", "part a"),
        (3, "ERROR", "part b broke"),
    ]
    assert (data["nextOffset"], data["complete"], data["lines"][1]["taskName"]) == (3, False, "parts")
    assert data["lines"][0]["workerId"] == "w1" and len(data["lines"][0]["time"]) == len(
        "2030-01-01 00:00:00.000"
    )
    page = await api.ok(PATH, **ADDR, jobId=job_id, instanceId=instance_id, offset=1, limit=1)
    assert [line["message"] for line in page["lines"]] == ["part a"] and page["nextOffset"] == 2
    errors = await api.ok(PATH, **ADDR, jobId=job_id, instanceId=instance_id, level="warning")
    assert [line["offset"] for line in errors["lines"]] == [3]
    task = await api.ok(PATH, **ADDR, jobId=job_id, instanceId=instance_id, taskId=2)
    assert [line["message"] for line in task["lines"]] == ["part a"]
    named = await api.ok(PATH, **ADDR, jobId=job_id, instanceId=instance_id, taskName="parts")
    assert len(named["lines"]) == 2


async def test_follow_waits_for_a_line_and_the_log_completes_after_the_end(api: Api) -> None:
    job_id, instance_id = await _instance(api)
    waiting = asyncio.create_task(
        api.ok(PATH, **ADDR, jobId=job_id, instanceId=instance_id, follow=True, wait=30)
    )
    # Most likely the request waits on the store by now; if the line were stored first, it is the same answer.
    await asyncio.sleep(0.3)
    await api.store.append_instance_logs("ns1", "g1", [_line(instance_id, api, "late")], max_lines=100)
    followed = await asyncio.wait_for(waiting, timeout=30)
    assert [line["message"] for line in followed["lines"]] == ["late"] and not followed["complete"]
    ended = api.clock.now()
    change = InstanceChange(status=InstanceStatus.SUCCESS, end_time=ended)
    assert await api.store.update_instance(instance_id, change) is not None
    recent = await api.ok(PATH, **ADDR, jobId=job_id, instanceId=instance_id, offset=1)
    assert recent["lines"] == [] and not recent["complete"]  # lines may still be on their way
    await api.clock.advance((LOG_SETTLE + timedelta(seconds=1)).total_seconds())
    done = await api.ok(PATH, **ADDR, jobId=job_id, instanceId=instance_id, offset=1, follow=True, wait=30)
    assert done["lines"] == [] and done["complete"] and done["nextOffset"] == 1
    unread = await api.ok(PATH, **ADDR, jobId=job_id, instanceId=instance_id, limit=1)
    assert not unread["complete"]  # complete only once every line was read


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"level": "LOUD"}, "level"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"follow": True, "wait": 61}, "wait"),
        ({"taskId": "x"}, "taskId"),
    ],
)
async def test_bad_parameters_are_refused_naming_the_field(
    api: Api, params: dict[str, object], field: str
) -> None:
    job_id, instance_id = await _instance(api)
    message = await api.error(PATH, 400, **ADDR, jobId=job_id, instanceId=instance_id, **params)
    assert field in message


async def test_an_unknown_instance_is_not_found(api: Api) -> None:
    job_id, instance_id = await _instance(api)
    message = await api.error(PATH, 404, **ADDR, jobId=job_id, instanceId=instance_id + 100)
    assert "instanceId" in message
