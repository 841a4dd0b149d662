"""Alibaba Cloud POP RPC requests: which signature a request carries, and the HMAC-SHA1 one checked.

The Tea SDK signs with ACS3-HMAC-SHA256 in the ``Authorization`` header, which ``Authenticator``
already verifies. The classic SDK (and Tea with ``signature_algorithm='v2'``) signs RPC style,
SignatureVersion 1.0, in the query:

    canon        = "&".join(pct(k) + "=" + pct(v) for every query and form pair but Signature, sorted)
    StringToSign = METHOD + "&" + pct("/") + "&" + pct(canon)
    Signature    = base64(hmac_sha1(AccessKeySecret + "&", StringToSign))

``PopAuthenticator`` checks either against the same access keys, with the same clock-skew window and
nonce memory as the ACS3 path. A scheduler with no access key is open (loopback only, see the
server's start-up check): it accepts any request, and a signature by a key it does not know is then
ignored rather than refused, because the Tea SDK always signs, even with the dummy keys of a local
setup. Once a key exists every request must carry a valid signature, whichever the scheme.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from sx.protos import signing
from sx.scheduler._errors import Unauthorized
from sx.scheduler.api._auth import Authenticator, SignedRequest
from sx.scheduler.store import AccessKey

__all__ = ["PopAuthenticator", "SignatureMismatch", "rpc_string_to_sign"]

_MAX_NONCE_CHARS = 128


class SignatureMismatch(Unauthorized):
    """The HMAC-SHA1 signature does not match; carries the server's StringToSign, which the classic
    SDK compares with its own to tell a wrong secret from a changed request."""

    def __init__(self, string_to_sign: str) -> None:
        super().__init__("Signature: does not match the request", field="Signature")
        self.string_to_sign = string_to_sign


def rpc_string_to_sign(method: str, pairs: Sequence[tuple[str, str]]) -> str:
    """The RPC (SignatureVersion 1.0) StringToSign of decoded query and form pairs."""
    pct = signing.percent_encode
    canon = "&".join(f"{pct(k)}={pct(v)}" for k, v in sorted(pairs) if k != "Signature")
    return f"{method.upper()}&{pct('/')}&{pct(canon)}"


def _rpc_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class PopAuthenticator:
    """Verifies a POP request's signature (ACS3 header or HMAC-SHA1 query) against the access keys."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def authenticate(
        self, request: SignedRequest, query: dict[str, str], pairs: Sequence[tuple[str, str]]
    ) -> AccessKey | None:
        """The signing key; None while the scheduler has no access key (open). ``query`` holds the
        decoded query parameters, ``pairs`` every decoded query and form pair."""
        if not await self.auth.store.has_access_keys():
            return None
        if "Signature" in query:
            return await self._verify_rpc(request.method, query, pairs)
        return await self.auth.authenticate(request)

    async def _verify_rpc(
        self, method: str, query: dict[str, str], pairs: Sequence[tuple[str, str]]
    ) -> AccessKey:
        for name, expected in (("SignatureMethod", "HMAC-SHA1"), ("SignatureVersion", "1.0")):
            if query.get(name) != expected:
                raise Unauthorized(f"{name}={query.get(name, '')[:40]!r}: must be {expected}", field=name)
        key_id = query.get("AccessKeyId", "")
        key = await self.auth.store.get_access_key(key_id) if key_id else None
        if key is None or not key.enabled:
            raise Unauthorized(
                f"AccessKeyId={key_id[:64]!r}: unknown or disabled access key", field="AccessKeyId"
            )
        string_to_sign = rpc_string_to_sign(method, pairs)
        if not hmac.compare_digest(_rpc_signature(key.secret, string_to_sign), query["Signature"]):
            raise SignatureMismatch(string_to_sign)
        # Timestamp and nonce are signed: checked once the signature holds, as on the ACS3 path.
        stamp = query.get("Timestamp", "")
        try:
            signed_at = signing.parse_date(stamp)
        except ValueError as exc:
            raise Unauthorized(
                f"Timestamp={stamp[:40]!r}: not yyyy-MM-ddTHH:mm:ssZ", field="Timestamp"
            ) from exc
        max_skew = self.auth.max_skew
        if abs(self.auth.clock.now() - signed_at) > max_skew:
            raise Unauthorized(
                f"Timestamp={stamp!r}: more than {int(max_skew.total_seconds() // 60)} minutes from the "
                "scheduler's clock",
                field="Timestamp",
            )
        nonce = query.get("SignatureNonce", "").strip()
        if not nonce or len(nonce) > _MAX_NONCE_CHARS:
            raise Unauthorized(
                f"SignatureNonce: must be 1 to {_MAX_NONCE_CHARS} characters", field="SignatureNonce"
            )
        if not await self.auth.store.remember_nonce(f"{key.key_id}:{nonce}", signed_at + max_skew * 2):
            raise Unauthorized(f"SignatureNonce={nonce!r}: replayed request", field="SignatureNonce")
        return key
