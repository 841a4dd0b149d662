"""ACS3-HMAC-SHA256 request signing, shared by our OpenAPI client and the scheduler's verifier.

The scheme is the public one of Alibaba Cloud's V3 signature, so existing SDK habits carry over:

    CanonicalRequest = METHOD \\n CanonicalURI \\n CanonicalQueryString \\n
                       CanonicalHeaders \\n SignedHeaders \\n HashedRequestPayload
    StringToSign     = "ACS3-HMAC-SHA256" \\n hex(sha256(CanonicalRequest))
    Signature        = hex(hmac_sha256(secret, StringToSign))
    Authorization: ACS3-HMAC-SHA256 Credential=<keyId>,SignedHeaders=<a;b;c>,Signature=<hex>

Signed headers are ``host``, every ``x-acs-*`` header and ``content-type`` when present; the payload
hash is the hex SHA-256 of the body, also sent as ``x-acs-content-sha256``. Both sides decode and
re-encode the path and query string before signing, so a client and a server that escape a character
differently still agree. Everything here is pure: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = [
    "ALGORITHM",
    "CONTENT_HASH_HEADER",
    "DATE_HEADER",
    "NONCE_HEADER",
    "REQUIRED_SIGNED_HEADERS",
    "Authorization",
    "canonical_query_string",
    "canonical_request",
    "canonical_uri",
    "compute_signature",
    "format_authorization",
    "format_date",
    "hash_payload",
    "headers_to_sign",
    "host_of",
    "parse_authorization",
    "parse_date",
    "percent_encode",
    "query_pairs",
    "sign_request",
    "string_to_sign",
]

ALGORITHM = "ACS3-HMAC-SHA256"
DATE_HEADER = "x-acs-date"
NONCE_HEADER = "x-acs-signature-nonce"
CONTENT_HASH_HEADER = "x-acs-content-sha256"
REQUIRED_SIGNED_HEADERS = ("host", DATE_HEADER, NONCE_HEADER, CONTENT_HASH_HEADER)
"""Headers every signed request must sign: without them a signature could be replayed elsewhere."""

_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of an ``Authorization: ACS3-HMAC-SHA256 ...`` header."""

    key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def percent_encode(text: str) -> str:
    """RFC 3986 encoding: everything but unreserved characters (A-Z a-z 0-9 - _ . ~) is escaped."""
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """The encoded path; ``/`` when empty. The path is decoded first so escaping differences vanish."""
    if not path:
        return "/"
    return quote(unquote(path), safe="/~")


def canonical_query_string(pairs: Iterable[tuple[str, str]]) -> str:
    """Encoded ``key=value`` pairs sorted by key then value, joined by ``&``."""
    encoded = sorted((percent_encode(k), percent_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def query_pairs(query: str) -> list[tuple[str, str]]:
    """Decode a raw query string into (key, value) pairs, keeping blank values."""
    return parse_qsl(query, keep_blank_values=True)


def hash_payload(body: bytes) -> str:
    """Hex SHA-256 of the request body (of b"" when there is none)."""
    return hashlib.sha256(body).hexdigest()


def headers_to_sign(headers: Mapping[str, str]) -> list[str]:
    """The lower-case names a signer signs: host, content-type and every x-acs-* header, sorted."""
    names = {name.lower() for name in headers}
    return sorted(n for n in names if n in ("host", "content-type") or n.startswith("x-acs-"))


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """The canonical request string. ``headers`` keys are matched case-insensitively; a signed header
    that is missing reads as empty (the signature then fails to match, which is what we want)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    names = sorted(name.lower() for name in signed_headers)
    header_lines = "".join(f"{name}:{lowered.get(name, '').strip()}\n" for name in names)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query_string(query_pairs(query)),
            header_lines,
            ";".join(names),
            payload_hash,
        ]
    )


def string_to_sign(canonical: str) -> str:
    return f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def compute_signature(secret: str, canonical: str) -> str:
    """Hex HMAC-SHA256 of the string to sign, keyed by the access key secret."""
    return hmac.new(secret.encode(), string_to_sign(canonical).encode(), hashlib.sha256).hexdigest()


def format_date(now: datetime) -> str:
    """``x-acs-date`` value: ISO 8601 UTC to the second, e.g. ``2030-01-01T12:00:00Z``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).strftime(_DATE_FORMAT)


def parse_date(text: str) -> datetime:
    """Read an ``x-acs-date`` value; raises ValueError when it is not ``yyyy-MM-ddTHH:mm:ssZ``."""
    return datetime.strptime(text.strip(), _DATE_FORMAT).replace(tzinfo=UTC)


def host_of(url: str) -> str:
    """The Host header an HTTP client sends for ``url``: the default port is left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets in the Host header
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    if port is not None and port != default:
        return f"{host}:{port}"
    return host


def format_authorization(key_id: str, signed_headers: Sequence[str], signature: str) -> str:
    return f"{ALGORITHM} Credential={key_id},SignedHeaders={';'.join(signed_headers)},Signature={signature}"


def parse_authorization(value: str) -> Authorization:
    """Parse an Authorization header; raises ValueError naming what is wrong."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise ValueError(f"Authorization must start with {ALGORITHM}, got {algorithm[:40]!r}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, field_value = part.strip().partition("=")
        if not sep:
            raise ValueError(f"Authorization part {part.strip()[:40]!r} is not name=value")
        fields[name.strip()] = field_value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise ValueError(f"Authorization lacks {', '.join(missing)}")
    signed = tuple(h.strip().lower() for h in fields["SignedHeaders"].split(";") if h.strip())
    return Authorization(key_id=fields["Credential"], signed_headers=signed, signature=fields["Signature"])


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    key_id: str,
    secret: str,
    now: datetime,
    nonce: str,
) -> dict[str, str]:
    """Sign a request; returns the headers to add (x-acs-date, x-acs-signature-nonce,
    x-acs-content-sha256 and Authorization). ``url`` is the full URL as sent, query string included;
    ``headers`` the request's other headers (a ``content-type`` among them is signed too). The Host
    header is signed as an HTTP client derives it from ``url`` unless ``headers`` carries one."""
    if not nonce:
        raise ValueError("nonce must not be empty")
    parts = urlsplit(url)
    added = {
        DATE_HEADER: format_date(now),
        NONCE_HEADER: nonce,
        CONTENT_HASH_HEADER: hash_payload(body),
    }
    all_headers = {name.lower(): value for name, value in headers.items()}
    all_headers.setdefault("host", host_of(url))
    all_headers.update(added)
    signed = headers_to_sign(all_headers)
    canonical = canonical_request(
        method, parts.path, parts.query, all_headers, signed, added[CONTENT_HASH_HEADER]
    )
    added["Authorization"] = format_authorization(key_id, signed, compute_signature(secret, canonical))
    return added
