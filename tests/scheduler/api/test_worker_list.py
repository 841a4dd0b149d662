"""ListWorkers over real HTTP against a real scheduler with a real worker connected (the in-process
test kit), its paging and its errors; worker processes are listed in tests/e2e/test_listings_e2e.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from sx.processors import JobContext, Processor, Registry, processor
from sx.worker.testing import LocalScheduler
from tests.scheduler.api.test_harness import running_api

PATH = "/openapi/v1/worker/list"
ADDR = {"namespace": "default", "groupId": "default"}
registry = Registry()


@processor(name="listed.noop", registry=registry)
class Noop(Processor):
    async def process(self, ctx: JobContext) -> None:
        return None


@pytest.fixture
async def sched(tmp_path: Path) -> AsyncIterator[LocalScheduler]:
    async with LocalScheduler(tmp_path, registry=registry, concurrency=3) as local:
        yield local


async def _call(sched: LocalScheduler, **params: Any) -> dict[str, Any]:
    assert sched.server is not None
    async with httpx.AsyncClient(base_url=sched.server.http_url, timeout=30) as http:
        body: dict[str, Any] = (await http.post(PATH, data=params)).json()
    return body


async def test_the_connected_worker_is_listed(sched: LocalScheduler) -> None:
    assert sched.worker is not None
    body = await _call(sched, **ADDR)
    assert body["success"], body
    data = body["data"]
    assert (data["total"], data["pageNum"], data["pageSize"]) == (1, 1, 20)
    (worker,) = data["workers"]
    assert worker["workerId"] == sched.worker.worker_id
    assert worker["processors"] == ["listed.noop"] and worker["capacity"] == 3
    assert worker["version"] == metadata.version("sx-worker") and worker["draining"] is False
    assert worker["lastHeartbeat"] and worker["connectedAt"] and worker["address"].startswith("127.0.0.1:")
    assert (worker["running"], worker["assigned"]) == (0, 0)
    past_the_end = (await _call(sched, **ADDR, pageNum=2))["data"]
    assert (past_the_end["total"], past_the_end["workers"]) == (1, [])


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"pageSize": 0}, 400, "pageSize"),
        ({"pageSize": 101}, 400, "pageSize"),
        ({"pageNum": -1}, 400, "pageNum"),
        ({"pageNum": "x"}, 400, "pageNum"),
        ({"groupId": "nope"}, 404, "groupId"),
        ({"namespace": "nope"}, 404, "namespace"),
        ({"groupId": ""}, 400, "groupId"),
    ],
)
async def test_bad_requests_name_the_field(
    sched: LocalScheduler, params: dict[str, Any], code: int, field: str
) -> None:
    body = await _call(sched, **{**ADDR, **params})
    assert body["code"] == code and field in body["message"], body


async def test_a_scheduler_without_a_dispatcher_says_so(tmp_path: Path) -> None:
    async with running_api(tmp_path) as api:
        await api.setup()
        message = await api.error(PATH, 404, namespace="ns1", groupId="g1")
        assert "workers are not listed by this scheduler" in message
