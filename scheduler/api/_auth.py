"""Access keys and the verification of signed OpenAPI requests (ACS3-HMAC-SHA256).

A scheduler with no access key is open: it accepts unsigned requests, so a first key can be created
through the API. Once any key exists every OpenAPI request must be signed by an enabled key, dated
within ``max_skew`` of the scheduler's clock and carry a nonce not seen before; a key reaches only its
own namespace. The canonicalization is ``sx.protos.signing``, the same code our client signs with.

The key management functions (``create_access_key`` and friends) are what the CLI calls; the
admin endpoints reach them through ``AccessKeys``.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sx.protos import signing
from sx.scheduler._clock import Clock
from sx.scheduler._errors import Forbidden, NotFound, Unauthorized
from sx.scheduler.jobs import require_namespace
from sx.scheduler.store import AccessKey, AccessStore

__all__ = [
    "DEFAULT_MAX_SKEW",
    "AccessKeys",
    "Authenticator",
    "SignedRequest",
    "check_namespace",
    "create_access_key",
    "delete_access_key",
    "list_access_keys",
]

log = logging.getLogger("sx.scheduler.auth")

DEFAULT_MAX_SKEW = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What verification needs of an HTTP request, independent of the web framework."""

    method: str
    path: str
    """The path as sent (percent-encoded or not; canonicalization decodes it)."""
    query: str
    """The raw query string, without ``?``."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes


async def create_access_key(store: AccessStore, namespace: str) -> AccessKey:
    """Create an enabled access key for ``namespace``; the secret is only ever returned here."""
    await require_namespace(store, namespace)
    key = AccessKey(
        key_id="SX" + secrets.token_hex(10).upper(),
        secret=secrets.token_urlsafe(30),
        namespace=namespace,
        enabled=True,
    )
    created = await store.create_access_key(key)
    log.info("access key %s created for namespace %s", created.key_id, namespace)
    return created


async def list_access_keys(store: AccessStore, namespace: str | None = None) -> list[AccessKey]:
    """Access keys, of one namespace or all."""
    return await store.list_access_keys(namespace)


async def delete_access_key(store: AccessStore, key_id: str, *, namespace: str | None = None) -> None:
    """Delete a key; with ``namespace``, only a key of that namespace (NotFound otherwise)."""
    key = await store.get_access_key(key_id)
    if key is None or (namespace is not None and key.namespace != namespace):
        raise NotFound(f"accessKeyId={key_id!r}: no such access key", field="accessKeyId", value=key_id)
    await store.delete_access_key(key_id)
    log.info("access key %s of namespace %s deleted", key_id, key.namespace)


class AccessKeys:
    """Access key management over a store, for the admin endpoints."""

    def __init__(self, store: AccessStore) -> None:
        self._store = store

    async def create(self, namespace: str) -> AccessKey:
        return await create_access_key(self._store, namespace)

    async def list_keys(self, namespace: str | None = None) -> list[AccessKey]:
        return await list_access_keys(self._store, namespace)

    async def delete(self, key_id: str, *, namespace: str | None = None) -> None:
        await delete_access_key(self._store, key_id, namespace=namespace)

    async def exist(self) -> bool:
        """Whether any key exists (then nothing is open: the console asks for sign-in too)."""
        return await self._store.has_access_keys()

    async def enabled_key(self, key_id: str) -> AccessKey | None:
        """The key if it exists and is enabled (a console session re-checks its key on each request)."""
        key = await self._store.get_access_key(key_id)
        return key if key is not None and key.enabled else None

    async def verify(self, key_id: str, secret: str) -> AccessKey | None:
        """The enabled key with that id and secret (a console sign-in); None otherwise."""
        key = await self.enabled_key(key_id)
        if key is None or not hmac.compare_digest(key.secret.encode(), secret.encode()):
            return None
        return key


def check_namespace(key: AccessKey | None, namespace: str | None) -> None:
    """Forbidden when a request signed by ``key`` addresses another namespace."""
    if key is not None and namespace is not None and key.namespace != namespace:
        raise Forbidden(
            f"namespace={namespace!r}: access key {key.key_id} belongs to namespace {key.namespace!r}",
            field="namespace",
            value=namespace,
        )


class Authenticator:
    """Verifies signed requests against the store's access keys."""

    def __init__(self, store: AccessStore, *, clock: Clock, max_skew: timedelta = DEFAULT_MAX_SKEW) -> None:
        self.store = store
        self.clock = clock
        self.max_skew = max_skew

    async def authenticate(self, request: SignedRequest) -> AccessKey | None:
        """The key that signed the request; None when the scheduler has no key (open).
        Raises Unauthorized for an unsigned, wrongly signed, expired or replayed request."""
        authorization = request.headers.get("authorization")
        if authorization is None:
            if not await self.store.has_access_keys():
                return None
            raise Unauthorized(
                "request is not signed: access keys exist, so an Authorization header is required"
            )
        try:
            parsed = signing.parse_authorization(authorization)
        except ValueError as exc:
            raise Unauthorized(f"Authorization: {exc}") from exc
        key = await self.store.get_access_key(parsed.key_id)
        if key is None or not key.enabled:
            raise Unauthorized(f"Credential={parsed.key_id[:64]!r}: unknown or disabled access key")
        missing = [h for h in signing.REQUIRED_SIGNED_HEADERS if h not in parsed.signed_headers]
        if missing:
            raise Unauthorized(f"SignedHeaders: must include {', '.join(missing)}")
        payload_hash = signing.hash_payload(request.body)
        if request.headers.get(signing.CONTENT_HASH_HEADER, "").strip().lower() != payload_hash:
            raise Unauthorized(f"{signing.CONTENT_HASH_HEADER}: does not match the body's SHA-256")
        canonical = signing.canonical_request(
            request.method, request.path, request.query, request.headers, parsed.signed_headers, payload_hash
        )
        expected = signing.compute_signature(key.secret, canonical)
        if not hmac.compare_digest(expected, parsed.signature.lower()):
            raise Unauthorized("Signature: does not match the request")
        # The date and nonce are signed, so they are checked only once the signature holds.
        date_text = request.headers.get(signing.DATE_HEADER, "")
        try:
            signed_at = signing.parse_date(date_text)
        except ValueError as exc:
            raise Unauthorized(f"{signing.DATE_HEADER}={date_text[:40]!r}: not yyyy-MM-ddTHH:mm:ssZ") from exc
        now = self.clock.now()
        if abs(now - signed_at) > self.max_skew:
            raise Unauthorized(
                f"{signing.DATE_HEADER}={date_text!r}: more than {int(self.max_skew.total_seconds() // 60)} "
                "minutes from the scheduler's clock"
            )
        nonce = request.headers.get(signing.NONCE_HEADER, "").strip()
        if not nonce or len(nonce) > 128:
            raise Unauthorized(f"{signing.NONCE_HEADER}: must be 1 to 128 characters")
        # Remember the nonce until the date could no longer pass the skew check.
        if not await self.store.remember_nonce(f"{key.key_id}:{nonce}", signed_at + self.max_skew * 2):
            raise Unauthorized(f"{signing.NONCE_HEADER}={nonce!r}: replayed request")
        return key
