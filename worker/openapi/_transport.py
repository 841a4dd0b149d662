"""The OpenAPI client's transport: the HTTP session, request signing, retries and envelope decoding.

Every request is a POST with a JSON body (the API accepts that for all endpoints, and a JSON body keeps
lists such as ``contactInfo`` intact). With an access key every request is signed (ACS3-HMAC-SHA256,
the same code the scheduler verifies with), with a fresh nonce per attempt. Idempotent calls (reads,
lists, enable/disable, delete, stop) are retried with exponential backoff on connection errors and
5xx answers; creating and executing are retried only when the connection could not be made at all,
since then the request cannot have reached the scheduler. The errors it raises are drawn in
``sx.worker.openapi._errors``. The route families (``_jobs``, ``_workflows``, ...) build on
``OpenApiTransport``; ``OpenApiClient`` (``_client``) composes them.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

import httpx
import tenacity

from sx.protos import sign_request
from sx.worker.openapi._errors import OpenApiError, ServerError, UnavailableError, error_class

__all__ = ["MAX_PAGE_SIZE", "OpenApiTransport"]

MAX_PAGE_SIZE: Final = 100


class _Retry(Exception):
    """An attempt that may be repeated; carries the error to raise when no attempt is left."""

    def __init__(self, error: OpenApiError) -> None:
        self.error = error


class OpenApiTransport:
    """The connection to one scheduler's OpenAPI, addressing one namespace and group: ``call`` POSTs
    to one endpoint and answers the envelope's data or raises an ``OpenApiError``.

    ``retries`` is how many times an idempotent call is repeated; ``backoff`` the first delay in
    seconds, doubled each time. ``transport`` replaces httpx's default (e.g. for a Unix socket).
    """

    def __init__(
        self,
        base_url: str,
        *,
        namespace: str,
        group_id: str,
        namespace_source: str | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r}: must start with http:// or https://")
        if (access_key_id is None) != (access_key_secret is None):
            raise ValueError("access_key_id and access_key_secret must be given together")
        if retries < 0:
            raise ValueError(f"retries={retries!r}: must be at least 0")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout!r}: must be positive")
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace
        self.group_id = group_id
        self.namespace_source = namespace_source
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._key = (access_key_id, access_key_secret) if access_key_id and access_key_secret else None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _address(self) -> dict[str, Any]:
        params: dict[str, Any] = {"namespace": self.namespace, "groupId": self.group_id}
        if self.namespace_source is not None:
            params["namespaceSource"] = self.namespace_source
        return params

    async def call(
        self, path: str, params: Mapping[str, Any] | None = None, *, idempotent: bool, address: bool = True
    ) -> Any:
        """POST ``params`` (plus namespace and group when ``address``) to ``path``; the envelope's data."""
        body_params = {**(self._address() if address else {}), **(params or {})}
        body = json.dumps(body_params, separators=(",", ":")).encode()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=self._backoff_wait,
            retry=tenacity.retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(path, body, idempotent=idempotent)
        except _Retry as retry:
            raise retry.error from None
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    def _backoff_wait(self, state: tenacity.RetryCallState) -> float:
        """``backoff`` doubled per attempt, times 0.5 to 1 at random: the jitter spreads retrying clients."""
        delay: float = self.backoff * 2 ** (state.attempt_number - 1)
        return delay * (0.5 + random.random() / 2)

    async def _attempt(self, path: str, body: bytes, *, idempotent: bool) -> Any:
        headers = {"content-type": "application/json", "accept": "application/json"}
        url = self.base_url + path
        if self._key is not None:
            headers.update(
                sign_request(
                    "POST",
                    url,
                    {"content-type": headers["content-type"]},
                    body,
                    self._key[0],
                    self._key[1],
                    datetime.now(UTC),
                    uuid.uuid4().hex,
                )
            )
        try:
            response = await self._http.post(path, content=body, headers=headers)
        except httpx.ConnectError as exc:
            # Never reached the scheduler: safe to repeat even a create.
            raise _Retry(UnavailableError(f"cannot connect to {self.base_url}: {exc}", path=path)) from exc
        except httpx.TransportError as exc:
            error = UnavailableError(f"{type(exc).__name__} talking to {self.base_url}: {exc}", path=path)
            if idempotent:
                raise _Retry(error) from exc
            raise error from exc
        return self._unwrap(path, response, idempotent=idempotent)

    def _unwrap(self, path: str, response: httpx.Response, *, idempotent: bool) -> Any:
        request_id = response.headers.get("x-request-id", "")
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or "code" not in envelope:
            error: OpenApiError = ServerError(
                f"HTTP {response.status_code}, not an OpenAPI answer: {response.text[:200]!r}",
                code=response.status_code,
                request_id=request_id,
                http_status=response.status_code,
                path=path,
            )
        elif envelope.get("success") is True and envelope.get("code") == 200:
            return envelope.get("data")
        else:
            code = int(envelope.get("code") or response.status_code)
            error = error_class(code)(
                str(envelope.get("message") or "(no message)"),
                code=code,
                request_id=str(envelope.get("requestId") or request_id),
                http_status=response.status_code,
                path=path,
            )
        if response.status_code >= 500 and idempotent:
            raise _Retry(error)
        raise error
