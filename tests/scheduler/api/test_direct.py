"""The OpenAPI endpoints are answered without FastAPI's routing (see scheduler/_api.py): the answers
are the same as through it, and whatever is not an endpoint's GET or POST still goes through FastAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.scheduler.api import ENDPOINTS
from tests.scheduler.api.test_harness import Api, running_api

ADDR = {"namespace": "ns1", "groupId": "g1"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        await api.setup()
        yield api


async def test_get_and_post_at_every_alias_reach_the_endpoint(api: Api) -> None:
    job_id = await api.create_job(name="j")
    for path in ("/openapi/job/v1/get", "/openapi/v1/job/get"):
        for method in ("GET", "POST"):
            status, body = await api.call(path, {**ADDR, "jobId": job_id}, method=method)
            assert status == 200 and body["data"]["jobId"] == job_id, (path, method, body)


async def test_other_methods_and_paths_still_go_through_fastapi(api: Api) -> None:
    response = await api.client.request("PUT", "/openapi/v1/job/get", params=ADDR)
    assert response.status_code == 405 and response.json()["code"] == 405
    response = await api.client.get("/openapi/v1/no/such/path")
    assert response.status_code == 404 and response.json()["code"] == 404
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    documented = set(response.json()["paths"])
    assert {path for endpoint in ENDPOINTS for path in endpoint.paths} <= documented


async def test_query_and_headers_read_from_the_raw_request(api: Api) -> None:
    # Percent-encoded and repeated query parameters are read as before.
    job_id = await api.create_job(name="a b&c")
    response = await api.client.get(
        "/openapi/v1/job/list?namespace=ns1&groupId=g1&name=a%20b%26c", headers={"X-Custom": "1"}
    )
    body = response.json()
    assert body["code"] == 200 and [job["jobId"] for job in body["data"]["jobs"]] == [job_id]
    bad = await api.client.get("/openapi/v1/job/get", params={**ADDR, "jobId": "x"})
    assert bad.status_code == 400 and "jobId" in bad.json()["message"]
