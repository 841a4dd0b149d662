"""The verifier and access key functions, without HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sx.protos import sign_request
from sx.scheduler._clock import ManualClock
from sx.scheduler.api import Forbidden, NotFound, Unauthorized
from sx.scheduler.api._auth import (
    Authenticator,
    SignedRequest,
    check_namespace,
    create_access_key,
    delete_access_key,
    list_access_keys,
)
from sx.scheduler.store import AccessKey, Namespace
from sx.scheduler.store.sql import SqlStore, sqlite_url

NOW = datetime(2030, 1, 1, tzinfo=UTC)
URL = "http://sched:7700/openapi/v1/job/get?namespace=ns1&groupId=g1&jobId=1"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(sqlite_url(tmp_path))
    await store.start()
    await store.create_namespace(Namespace(id="ns1", name="ns1"))
    await store.create_namespace(Namespace(id="ns2", name="ns2"))
    yield store
    await store.close()


def _request(key: AccessKey, *, body: bytes = b"", at: datetime = NOW, nonce: str = "n1") -> SignedRequest:
    headers = {"host": "sched:7700", "content-type": "application/json"}
    headers.update(
        {
            k.lower(): v
            for k, v in sign_request("POST", URL, headers, body, key.key_id, key.secret, at, nonce).items()
        }
    )
    parts = urlsplit(URL)
    return SignedRequest(method="POST", path=parts.path, query=parts.query, headers=headers, body=body)


async def test_key_management(store: SqlStore) -> None:
    key = await create_access_key(store, "ns1")
    assert key.key_id.startswith("SX") and len(key.secret) >= 30 and key.namespace == "ns1"
    await create_access_key(store, "ns2")
    assert [k.key_id for k in await list_access_keys(store, "ns1")] == [key.key_id]
    assert len(await list_access_keys(store)) == 2
    with pytest.raises(NotFound):
        await create_access_key(store, "missing")
    with pytest.raises(NotFound):
        await delete_access_key(store, key.key_id, namespace="ns2")
    await delete_access_key(store, key.key_id)
    with pytest.raises(NotFound):
        await delete_access_key(store, key.key_id)


async def test_open_without_keys_and_closed_with_one(store: SqlStore) -> None:
    auth = Authenticator(store, clock=ManualClock(NOW))
    unsigned = SignedRequest(method="GET", path="/x", query="", headers={}, body=b"")
    assert await auth.authenticate(unsigned) is None
    await create_access_key(store, "ns1")
    with pytest.raises(Unauthorized, match="not signed"):
        await auth.authenticate(unsigned)


async def test_signed_request_yields_its_key(store: SqlStore) -> None:
    key = await create_access_key(store, "ns1")
    auth = Authenticator(store, clock=ManualClock(NOW + timedelta(minutes=5)))
    assert await auth.authenticate(_request(key, body=b'{"a":1}')) == key


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("secret", "Signature"),
        ("body", "x-acs-content-sha256"),
        ("path", "Signature"),
        ("early", "x-acs-date"),
        ("late", "x-acs-date"),
        ("no-nonce-signed", "SignedHeaders"),
        ("garbled", "Authorization"),
    ],
)
async def test_bad_requests_are_unauthorized(store: SqlStore, change: str, match: str) -> None:
    key = await create_access_key(store, "ns1")
    auth = Authenticator(store, clock=ManualClock(NOW))
    request = _request(key, body=b"{}")
    if change == "secret":
        request = _request(AccessKey(key.key_id, "wrong", "ns1"), body=b"{}")
    elif change == "body":
        request = SignedRequest(request.method, request.path, request.query, request.headers, b"{ }")
    elif change == "path":
        request = SignedRequest(request.method, "/other", request.query, request.headers, request.body)
    elif change in ("early", "late"):
        offset = timedelta(minutes=16) * (-1 if change == "early" else 1)
        request = _request(key, body=b"{}", at=NOW + offset)
    elif change == "no-nonce-signed":
        headers = dict(request.headers)
        headers["authorization"] = headers["authorization"].replace(";x-acs-signature-nonce", "")
        request = SignedRequest(request.method, request.path, request.query, headers, request.body)
    else:
        request = SignedRequest(
            request.method,
            request.path,
            request.query,
            {**request.headers, "authorization": "ACS3-HMAC-SHA256 x"},
            b"",
        )
    with pytest.raises(Unauthorized, match=match):
        await auth.authenticate(request)


async def test_replay_and_disabled_keys(store: SqlStore) -> None:
    key = await create_access_key(store, "ns1")
    auth = Authenticator(store, clock=ManualClock(NOW))
    await auth.authenticate(_request(key, nonce="once"))
    with pytest.raises(Unauthorized, match="replayed"):
        await auth.authenticate(_request(key, nonce="once"))
    disabled = await store.create_access_key(AccessKey("SXDISABLED", "s3cret", "ns1", enabled=False))
    with pytest.raises(Unauthorized, match="disabled"):
        await auth.authenticate(_request(disabled))


def test_check_namespace() -> None:
    key = AccessKey("K", "s", "ns1")
    check_namespace(None, "ns2")
    check_namespace(key, "ns1")
    check_namespace(key, None)
    with pytest.raises(Forbidden, match="ns2"):
        check_namespace(key, "ns2")
