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
