"""The workflow OpenAPI extensions over real HTTP: create, get, update, list, and their errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sx.processors import JobContext, Processor, Registry, processor
from sx.worker.testing import LocalScheduler

registry = Registry()


@processor(name="api.a", registry=registry)
class A(Processor):
    def process(self, ctx: JobContext) -> str:
        return "a"


@processor(name="api.b", registry=registry)
class B(Processor):
    def process(self, ctx: JobContext) -> str:
        return "b"


@pytest.fixture
async def sched(tmp_path: Path) -> AsyncIterator[LocalScheduler]:
    async with LocalScheduler(tmp_path, registry=registry, start_worker=False) as local:
        await local.job_id(A)
        await local.job_id(B)
        yield local


async def call(sched: LocalScheduler, path: str, **params: str | int) -> dict[str, Any]:
    assert sched.server is not None
    async with httpx.AsyncClient(base_url=sched.server.http_url) as http:
        response = await http.get(path, params={"namespace": "default", "groupId": "default", **params})
    body: dict[str, Any] = response.json()
    return body


async def test_create_by_query_string_get_update_list(sched: LocalScheduler) -> None:
    a, b = await sched.job_id(A), await sched.job_id(B)
    created = await call(
        sched,
        "/openapi/v1/workflow/create",
        name="q",
        nodes=f"{a},api.b",
        edges=f"[[{a},{b}]]",
        timeType="1",
        timeExpression="0 0 3 * * ?",
        status="0",
    )
    assert created["success"], created
    wf_id = created["data"]
    got = await call(sched, "/openapi/v1/workflow/get", workflowId=wf_id)
    data = got["data"]
    assert isinstance(data, dict)
    assert data["nodes"] == [a, b] and data["edges"] == [[a, b]] and data["status"] == 0
    assert data["jobs"] == [{"jobId": a, "name": "api.a"}, {"jobId": b, "name": "api.b"}]
    updated = await call(sched, "/openapi/v1/workflow/update", workflowId=wf_id, description="d", status="1")
    assert updated["success"], updated
    listed = await call(sched, "/openapi/v1/workflow/list")
    assert isinstance(listed["data"], dict)
    [item] = listed["data"]["workflows"]
    assert item["description"] == "d" and item["status"] == 1 and item["timeExpression"] == "0 0 3 * * ?"


async def test_errors_name_the_field(sched: LocalScheduler) -> None:
    missing = await call(sched, "/openapi/v1/workflow/get", workflowId=12345)
    assert missing["code"] == 404 and "workflowId=12345" in str(missing["message"])
    bad = await call(
        sched, "/openapi/v1/workflow/create", name="x", nodes="api.a", timeType="1", timeExpression="nope"
    )
    assert bad["code"] == 400 and "timeExpression" in str(bad["message"])
    dup = await call(sched, "/openapi/v1/workflow/create", name="d", nodes="api.a")
    assert dup["success"]
    again = await call(sched, "/openapi/v1/workflow/create", name="d", nodes="api.a")
    assert again["code"] == 409
    no_instance = await call(sched, "/openapi/v1/workflow/instance/get", wfInstanceId=777)
    assert no_instance["code"] == 404
