"""Extensions (namespaces, groups, calendars, access keys), workflows, health, docs and the envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sx.scheduler.api import ENDPOINTS
from tests.scheduler.api.test_harness import CRON_JOB, AcsAuth, Api, running_api

ADDR = {"namespace": "ns1", "groupId": "g1"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        yield api


async def test_namespaces_and_groups(api: Api) -> None:
    created = await api.ok("/openapi/v1/namespace/create", namespace="ns1", name="Team one")
    assert created == {"namespace": "ns1", "name": "Team one", "description": ""}
    assert "already exists" in await api.error("/openapi/v1/namespace/create", 409, namespace="ns1")
    assert "namespace" in await api.error("/openapi/v1/namespace/create", 400, namespace="bad id!")
    assert [n["namespace"] for n in await api.ok("/openapi/v1/namespace/list")] == ["ns1"]
    group = await api.ok("/openapi/v1/group/create", namespace="ns1", groupId="g1")
    assert group["groupId"] == "g1" and len(group["appKey"]) >= 16
    given = await api.ok("/openapi/v1/group/create", namespace="ns1", groupId="g2", appKey="my-app-key-123")
    assert given["appKey"] == "my-app-key-123"
    assert await api.ok("/openapi/v1/group/get", namespace="ns1", groupId="g1") == group
    assert [g["groupId"] for g in await api.ok("/openapi/v1/group/list", namespace="ns1")] == ["g1", "g2"]
    assert "namespace" in await api.error("/openapi/v1/group/create", 404, namespace="nope", groupId="g1")
    await api.error("/openapi/v1/group/get", 404, namespace="ns1", groupId="g9")


async def test_calendars(api: Api) -> None:
    await api.setup()
    put = await api.ok(
        "/openapi/v1/calendar/put", namespace="ns1", name="workdays", days="2030-01-03,2030-01-02"
    )
    assert put["days"] == ["2030-01-02", "2030-01-03"]
    status, body = await api.call(
        "/openapi/v1/calendar/put",
        {"namespace": "ns1", "name": "workdays", "days": ["2030-01-04"]},
        style="json",
    )
    assert status == 200 and body["data"]["days"] == ["2030-01-04"]
    assert (await api.ok("/openapi/v1/calendar/get", namespace="ns1", name="workdays"))["days"] == [
        "2030-01-04"
    ]
    assert [c["name"] for c in await api.ok("/openapi/v1/calendar/list", namespace="ns1")] == ["workdays"]
    assert "2030-13-01" in await api.error(
        "/openapi/v1/calendar/put", 400, namespace="ns1", name="x", days="2030-13-01"
    )
    await api.error("/openapi/v1/calendar/get", 404, namespace="ns1", name="missing")
    job_id = await api.create_job(**{**CRON_JOB, "calendar": "workdays"})
    job = await api.store.get_job(job_id)
    assert job is not None and job.next_fire_time is not None
    assert job.next_fire_time.date().isoformat() == "2030-01-04"


async def test_access_key_endpoints(api: Api) -> None:
    await api.setup()
    created = await api.ok("/openapi/v1/accesskey/create", namespace="ns1")
    assert set(created) == {"accessKeyId", "accessKeySecret", "namespace", "enabled"}
    # From here on requests must be signed; the harness client signs with this key.
    api.auth = AcsAuth(created["accessKeyId"], created["accessKeySecret"], api.clock)
    listed = await api.ok("/openapi/v1/accesskey/list", namespace="ns1")
    assert listed == [{"accessKeyId": created["accessKeyId"], "namespace": "ns1", "enabled": True}]
    await api.error("/openapi/v1/accesskey/delete", 404, namespace="ns1", accessKeyId="SXNOPE")
    await api.ok("/openapi/v1/accesskey/delete", namespace="ns1", accessKeyId=created["accessKeyId"])
    api.auth = None
    assert await api.ok("/openapi/v1/accesskey/list", namespace="ns1") == []


async def test_workflow_endpoints_validate_then_answer_not_found(api: Api) -> None:
    await api.setup()
    for path in ("execute", "enable", "disable", "delete"):
        message = await api.error(f"/openapi/v1/workflow/{path}", 404, **ADDR, workflowId=7)
        assert message == "workflow 7 not found"
        assert "workflowId" in await api.error(f"/openapi/v1/workflow/{path}", 400, **ADDR)
    message = await api.error(
        "/openapi/v1/workflow/execute", 400, **ADDR, workflowId=7, instanceParameters="x" * 1001
    )
    assert "instanceParameters" in message and "1000 bytes" in message
    await api.error("/openapi/v1/workflow/execute", 404, **ADDR, workflowId=7, instanceParameters="é" * 500)


async def test_health_docs_and_openapi_document(api: Api) -> None:
    for method in ("GET", "POST"):
        response = await api.client.request(method, "/health")
        body = response.json()
        assert body["code"] == 200 and body["data"] == {"status": "ok"}
        assert response.headers["x-request-id"] == body["requestId"]
    assert (await api.client.get("/docs")).status_code == 200
    document = (await api.client.get("/openapi.json")).json()
    for endpoint in ENDPOINTS:
        for path in endpoint.paths:
            assert set(document["paths"][path]) == {"get", "post"}, path
            operation = document["paths"][path]["post"]
            assert operation["tags"] == [endpoint.tag]
            for method in ("get", "post"):
                errors = document["paths"][path][method]["responses"]
                assert {"400", "401", "403", "404", "409"} <= set(errors), (path, method)
                schema = errors["400"]["content"]["application/json"]["schema"]
                assert schema["required"] == ["code", "success", "message", "requestId", "data"]
            if endpoint.extension:
                assert "Extension" in operation["description"]
    create = document["paths"]["/openapi/v1/job/create"]
    assert (
        "timeExpression"
        in create["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )
    assert any(p["name"] == "jobType" for p in create["get"]["parameters"])
    assert len([p for e in ENDPOINTS if not e.extension for p in e.paths]) == 15  # 14 + the second GetJobInfo


async def test_unknown_path_and_method_get_an_envelope(api: Api) -> None:
    response = await api.client.get("/openapi/v1/job/nothing")
    body = response.json()
    assert response.status_code == 404 and body["code"] == 404 and body["success"] is False
    assert response.headers["x-request-id"] == body["requestId"]
    response = await api.client.put("/openapi/v1/job/create")
    assert response.status_code == 405 and response.json()["code"] == 405
    assert response.headers["allow"] == "GET, POST"


async def test_request_ids_are_fresh(api: Api) -> None:
    ids = {(await api.client.get("/health")).json()["requestId"] for _ in range(5)}
    assert len(ids) == 5
