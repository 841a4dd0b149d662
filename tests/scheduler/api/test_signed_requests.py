"""Signed requests over real HTTP: accepted when right; unsigned, wrong, expired, replayed and
cross-namespace requests are refused and change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from sx.scheduler._clock import ManualClock
from tests.scheduler.api.test_harness import API_JOB, AcsAuth, Api, running_api

ADDR = {"namespace": "ns1", "groupId": "g1"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        await api.setup()
        await api.setup("ns2", "g2")
        yield api


async def _key(api: Api, namespace: str) -> AcsAuth:
    created = await api.ok("/openapi/v1/accesskey/create", namespace=namespace)
    return AcsAuth(created["accessKeyId"], created["accessKeySecret"], api.clock)


async def _job_count(api: Api) -> int:
    return (await api.store.list_jobs("ns1", "g1")).total + (await api.store.list_jobs("ns2", "g2")).total


async def test_open_until_a_key_exists_then_signed_only(api: Api) -> None:
    await api.create_job(name="before-keys")
    auth = await _key(api, "ns1")
    status, body = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB, "name": "unsigned"})
    assert status == 401 and "not signed" in body["message"]
    for style in ("query", "form", "json"):
        status, body = await api.call(
            "/openapi/v1/job/create", {**ADDR, **API_JOB, "name": f"signed-{style}"}, style=style, auth=auth
        )
        assert status == 200, body
    status, body = await api.call("/openapi/v1/job/list", ADDR, method="GET", auth=auth)
    assert status == 200 and body["data"]["total"] == 4


async def test_wrong_secret_and_unknown_key_are_refused(api: Api) -> None:
    auth = await _key(api, "ns1")
    count = await _job_count(api)
    wrong = AcsAuth(auth.key_id, auth.secret + "x", api.clock)
    status, body = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB}, auth=wrong)
    assert status == 401 and "Signature" in body["message"]
    unknown = AcsAuth("SXUNKNOWN", auth.secret, api.clock)
    status, body = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB}, auth=unknown)
    assert status == 401 and "SXUNKNOWN" in body["message"]
    assert await _job_count(api) == count


async def test_tampered_body_is_refused(api: Api) -> None:
    auth = await _key(api, "ns1")
    request = api.client.build_request("POST", "/openapi/v1/job/create", data={**ADDR, **API_JOB})
    signed = next(auth.auth_flow(request))
    tampered = api.client.build_request(
        "POST",
        "/openapi/v1/job/create",
        data={**ADDR, **API_JOB, "name": "evil"},
        headers=dict(signed.headers),
    )
    tampered.headers["content-length"] = str(len(tampered.content))
    response = await api.client.send(tampered)
    assert response.status_code == 401 and "x-acs-content-sha256" in response.json()["message"]
    assert await _job_count(api) == 0


async def test_expired_request_is_refused(api: Api) -> None:
    auth = await _key(api, "ns1")
    for offset in (-16 * 60, 16 * 60):  # the client's clock is 16 minutes behind, then ahead
        client_clock = ManualClock(api.clock.now() + timedelta(seconds=offset))
        skewed = AcsAuth(auth.key_id, auth.secret, client_clock)
        status, body = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB}, auth=skewed)
        assert status == 401 and "x-acs-date" in body["message"]
    within = AcsAuth(auth.key_id, auth.secret, ManualClock(api.clock.now() - timedelta(minutes=14)))
    status, _ = await api.call("/openapi/v1/job/list", ADDR, auth=within)
    assert status == 200
    assert await _job_count(api) == 0


async def test_replayed_nonce_is_refused(api: Api) -> None:
    auth = await _key(api, "ns1")
    fixed = AcsAuth(auth.key_id, auth.secret, api.clock, nonce="same-nonce")
    status, _ = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB}, auth=fixed)
    assert status == 200
    status, body = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB, "name": "again"}, auth=fixed)
    assert status == 401 and "replayed" in body["message"]
    assert await _job_count(api) == 1


async def test_key_reaches_only_its_namespace(api: Api) -> None:
    auth = await _key(api, "ns1")
    status, _ = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB}, auth=auth)
    assert status == 200
    # ns2 is out of reach: job operations and admin calls that name it.
    status, body = await api.call(
        "/openapi/v1/job/create", {"namespace": "ns2", "groupId": "g2", **API_JOB}, auth=auth
    )
    assert status == 403 and "ns2" in body["message"]
    for path in ("/openapi/v1/group/list", "/openapi/v1/accesskey/create", "/openapi/v1/calendar/list"):
        status, _ = await api.call(path, {"namespace": "ns2"}, auth=auth)
        assert status == 403, path
    status, _ = await api.call("/openapi/v1/namespace/create", {"namespace": "ns3"}, auth=auth)
    assert status == 403
    status, body = await api.call("/openapi/v1/namespace/list", {}, auth=auth)
    assert [n["namespace"] for n in body["data"]] == ["ns1"]
    assert await _job_count(api) == 1


async def test_get_list_without_namespace_checks_the_jobs_namespace(api: Api) -> None:
    job_ns2 = await api.create_job("ns2", "g2", name="theirs")
    auth = await _key(api, "ns1")
    status, body = await api.call("/openapi/v1/instance/getList", {"jobId": job_ns2}, auth=auth)
    assert status == 403 and "ns2" in body["message"]


async def test_health_and_docs_need_no_signature(api: Api) -> None:
    await _key(api, "ns1")
    assert (await api.client.get("/health")).status_code == 200
    assert (await api.client.get("/docs")).status_code == 200
    assert (await api.client.get("/openapi.json")).status_code == 200


async def test_key_created_is_required_on_the_very_next_request(api: Api) -> None:
    # has_access_keys is cached in-process; creating a key through the API must drop the cached "open".
    await api.create_job(name="warm-the-cache")
    await _key(api, "ns1")
    status, body = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB, "name": "unsigned"})
    assert status == 401 and "not signed" in body["message"]


async def test_deleting_the_last_key_opens_the_next_request(api: Api) -> None:
    auth = await _key(api, "ns1")
    status, _ = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB, "name": "unsigned"})
    assert status == 401  # the cached answer is now "keys exist"
    status, body = await api.call(
        "/openapi/v1/accesskey/delete", {"namespace": "ns1", "accessKeyId": auth.key_id}, auth=auth
    )
    assert status == 200, body
    status, body = await api.call("/openapi/v1/job/create", {**ADDR, **API_JOB, "name": "open-again"})
    assert status == 200, body
