"""Garbage posted to every endpoint gets a 4xx envelope, never a 500, and writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sx.scheduler.api import ENDPOINTS
from tests.scheduler.api.test_harness import API_JOB, Api, running_api

PATHS = sorted({path for endpoint in ENDPOINTS for path in endpoint.paths})
GARBAGE_VALUES: list[Any] = [
    "",
    "x" * 5000,
    "\x00",
    "-1",
    "99999999999999999999999",
    "²",
    "1.5",
    "NaN",
    "' OR 1=1 --",
    "2030-02-30 25:61:61",
    True,
    1e308,
    [1, [2]],
    {"nested": {"deep": None}},
    None,
]
RAW_BODIES = [
    (b"\xff\xfe\x00garbage", "application/octet-stream"),
    (b"{not json", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'"just a string"', "application/json"),
    (b"a=%ZZ&&&==&b", "application/x-www-form-urlencoded"),
    (b"\xc3\x28", "application/x-www-form-urlencoded"),
]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        await api.setup()
        await api.create_job(name="keep")
        yield api


def _check(status: int, body: dict[str, Any], where: str, *, allow_ok: bool = False) -> None:
    if allow_ok and status == 200:
        return  # e.g. "-1" is a fine namespace id: what matters is that nothing fails inside
    assert 400 <= status < 500, (where, body)
    assert body["success"] is False and body["code"] == status and body["message"], (where, body)


async def test_garbage_values_in_every_parameter(api: Api) -> None:
    before = await api.store.list_jobs("ns1", "g1")
    for endpoint in ENDPOINTS:
        names = [p.name for p in endpoint.params] or ["namespace"]
        for value in GARBAGE_VALUES:
            params = dict.fromkeys(names, value)
            for path in endpoint.paths:
                response = await api.client.post(path, json=params)
                _check(response.status_code, response.json(), f"{path} {value!r}", allow_ok=True)
    # A good request with one garbage field is refused whole.
    for name in ("maxConcurrency", "timeType", "contactInfo", "timeout", "executeMode", "dataOffset"):
        for value in GARBAGE_VALUES[1:]:
            response = await api.client.post(
                "/openapi/v1/job/create", json={"namespace": "ns1", "groupId": "g1", **API_JOB, name: value}
            )
            _check(response.status_code, response.json(), f"create {name}={value!r}")
    after = await api.store.list_jobs("ns1", "g1")
    assert [j.id for j in after.items] == [j.id for j in before.items]


@pytest.mark.parametrize(("raw", "content_type"), RAW_BODIES)
async def test_garbage_bodies(api: Api, raw: bytes, content_type: str) -> None:
    for path in PATHS:
        response = await api.client.post(path, content=raw, headers={"content-type": content_type})
        body = response.json()
        if response.status_code == 200:
            assert path == "/openapi/v1/namespace/list", (path, body)
        else:
            _check(response.status_code, body, path)


async def test_oversized_body_is_refused(api: Api) -> None:
    response = await api.client.post(
        "/openapi/v1/job/create", content=b"a" * (1024 * 1024 + 1), headers={"content-type": "text/plain"}
    )
    assert response.status_code == 400 and "body" in response.json()["message"]


async def _post_json(api: Api, path: str, text: str) -> tuple[int, dict[str, Any]]:
    response = await api.client.post(
        path, content=text.encode(), headers={"content-type": "application/json"}
    )
    return response.status_code, response.json()


async def test_a_lone_surrogate_is_refused_in_any_parameter_and_nothing_is_stored(api: Api) -> None:
    before = await api.store.list_jobs("ns1", "g1")
    job = '{"namespace": "ns1", "groupId": "g1", "name": "s", "jobType": "python", "className": "a:B", '
    status, body = await _post_json(
        api, "/openapi/v1/job/create", job + '"timeType": 100, "parameters": "\\udfff"}'
    )
    assert status == 400 and "parameters" in body["message"] and "surrogate" in body["message"], body
    keep = before.items[0].id
    status, body = await _post_json(
        api,
        "/openapi/v1/job/execute",
        f'{{"namespace": "ns1", "groupId": "g1", "jobId": {keep}, "instanceParameters": "ok \\ud800 then"}}',
    )
    assert status == 400 and "instanceParameters" in body["message"], body
    status, body = await _post_json(
        api, "/openapi/v1/job/list", '{"namespace": "ns1", "groupId": "g1", "\\udfff": 1}'
    )
    assert status == 400, body
    after = await api.store.list_jobs("ns1", "g1")
    assert [j.id for j in after.items] == [j.id for j in before.items]
    # What is stored can always be read back and listed.
    listed = await api.client.post("/openapi/v1/job/list", json={"namespace": "ns1", "groupId": "g1"})
    assert listed.status_code == 200


async def test_json_nested_deeper_than_the_limit_is_a_400_naming_the_body(api: Api) -> None:
    for depth in (33, 20_000):
        text = '{"namespace": "ns1", "x": ' + "[" * depth + "]" * depth + "}"
        status, body = await _post_json(api, "/openapi/v1/job/list", text)
        assert status == 400 and "body" in body["message"] and "nests more than 32" in body["message"], body
    status, _ = await _post_json(
        api, "/openapi/v1/job/list", '{"namespace": "ns1", "groupId": "g1", "x": [[1]]}'
    )
    assert status == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("maxConcurrency", "١٢"),  # Arabic-Indic digits: refused as they are in ids
        ("maxConcurrency", 2**63),
        ("maxConcurrency", 1_000_001),
        ("maxAttempt", 10**30),
        ("maxAttempt", 101),
        ("attemptInterval", 10**12),
        ("timeout", 10**18),
        ("pageSize", 10**9),
        ("consumerSize", 10**9),
        ("queueSize", 10**9),
        ("taskMaxAttempt", 10**6),
        ("taskAttemptInterval", 10**12),
    ],
)
async def test_numbers_outside_their_documented_range_are_refused_naming_the_field(
    api: Api, field: str, value: object
) -> None:
    extra: dict[str, Any] = {field: value}
    if field == "timeout":
        extra["timeoutEnable"] = True
        extra["timeoutKillEnable"] = True
    response = await api.client.post(
        "/openapi/v1/job/create",
        json={"namespace": "ns1", "groupId": "g1", **API_JOB, "name": "big", **extra},
    )
    body = response.json()
    assert response.status_code == 400 and field in body["message"], body


async def test_the_largest_values_in_range_are_stored_and_read_back(api: Api) -> None:
    extra: dict[str, Any] = {
        "maxConcurrency": 1_000_000,
        "maxAttempt": 100,
        "attemptInterval": 30 * 24 * 3600,
    }
    job_id = await api.create_job(name="edges", **extra)
    info = await api.ok("/openapi/v1/job/get", namespace="ns1", groupId="g1", jobId=job_id)
    assert {k: info[k] for k in extra} == extra


async def test_a_job_stored_before_the_bounds_existed_is_still_read_back_and_listed(api: Api) -> None:
    keep = (await api.store.list_jobs("ns1", "g1")).items[0]
    old = await api.store.create_job(
        namespace="ns1",
        group_id="g1",
        spec=keep.spec.model_copy(update={"name": "from-an-older-version", "max_concurrency": 2**63 - 1}),
        enabled=False,
        managed=False,
        next_fire_time=None,
    )
    info = await api.ok("/openapi/v1/job/get", namespace="ns1", groupId="g1", jobId=old.id)
    assert info["maxConcurrency"] == 2**63 - 1
    listed = await api.ok("/openapi/v1/job/list", namespace="ns1", groupId="g1")
    assert old.id in [job["jobId"] for job in listed["jobs"]]
