"""The ACS3-HMAC-SHA256 signer and canonicalization (pure functions)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from sx.protos import signing as s

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_percent_encoding_is_rfc3986() -> None:
    assert s.percent_encode("a b*~-_.+/é") == "a%20b%2A~-_.%2B%2F%C3%A9"
    assert s.canonical_uri("") == "/"
    assert s.canonical_uri("/openapi/v1/a b") == s.canonical_uri("/openapi/v1/a%20b") == "/openapi/v1/a%20b"


def test_query_string_is_sorted_and_keeps_blank_values() -> None:
    pairs = s.query_pairs("b=2&a=&c=x%20y&a=1")
    assert s.canonical_query_string(pairs) == "a=&a=1&b=2&c=x%20y"


def test_host_of_leaves_out_default_ports() -> None:
    assert s.host_of("http://127.0.0.1:8080/x") == "127.0.0.1:8080"
    assert s.host_of("http://example.com:80/x") == "example.com"
    assert s.host_of("https://example.com:443/") == "example.com"
    assert s.host_of("http://[::1]:9/") == "[::1]:9"


def test_signature_matches_a_hand_built_canonical_request() -> None:
    body = b"name=job&timeType=100"
    headers = s.sign_request(
        "post",
        "http://sched:7700/openapi/v1/job/create?namespace=ns1&groupId=g1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        body,
        "SXKEY",
        "secret",
        NOW,
        "n-1",
    )
    body_hash = hashlib.sha256(body).hexdigest()
    assert headers["x-acs-content-sha256"] == body_hash
    assert headers["x-acs-date"] == "2030-01-02T03:04:05Z"
    assert headers["x-acs-signature-nonce"] == "n-1"
    signed = "content-type;host;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce"
    canonical = (
        "POST\n/openapi/v1/job/create\ngroupId=g1&namespace=ns1\n"
        "content-type:application/x-www-form-urlencoded\nhost:sched:7700\n"
        f"x-acs-content-sha256:{body_hash}\nx-acs-date:2030-01-02T03:04:05Z\nx-acs-signature-nonce:n-1\n"
        f"\n{signed}\n{body_hash}"
    )
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    expected = hmac.new(b"secret", to_sign.encode(), hashlib.sha256).hexdigest()
    assert (
        headers["Authorization"]
        == f"ACS3-HMAC-SHA256 Credential=SXKEY,SignedHeaders={signed},Signature={expected}"
    )


@pytest.mark.parametrize(
    ("method", "url", "body", "secret", "nonce"),
    [
        ("GET", "http://h/p?a=1", b"", "k", "n"),
        ("POST", "http://h/p?a=2", b"", "k", "n"),
        ("POST", "http://h/q?a=1", b"", "k", "n"),
        ("POST", "http://h/p?a=1", b"x", "k", "n"),
        ("POST", "http://h/p?a=1", b"", "k2", "n"),
        ("POST", "http://h/p?a=1", b"", "k", "n2"),
        ("POST", "http://h2/p?a=1", b"", "k", "n"),
    ],
)
def test_every_part_changes_the_signature(
    method: str, url: str, body: bytes, secret: str, nonce: str
) -> None:
    base = s.sign_request("POST", "http://h/p?a=1", {}, b"", "id", "k", NOW, "n")["Authorization"]
    assert s.sign_request(method, url, {}, body, "id", secret, NOW, nonce)["Authorization"] != base


def test_escaping_differences_do_not_change_the_signature() -> None:
    one = s.sign_request("GET", "http://h/p?x=a%20b&y=~", {}, b"", "id", "k", NOW, "n")
    two = s.sign_request("GET", "http://h/p?y=%7E&x=a+b", {}, b"", "id", "k", NOW, "n")
    assert one == two


def test_parse_authorization() -> None:
    parsed = s.parse_authorization(
        "ACS3-HMAC-SHA256 Credential=K1,SignedHeaders=host;X-Acs-Date,Signature=ab"
    )
    assert parsed == s.Authorization("K1", ("host", "x-acs-date"), "ab")
    for bad in ("Basic abc", "ACS3-HMAC-SHA256 Credential=K1", "ACS3-HMAC-SHA256 junk", ""):
        with pytest.raises(ValueError):
            s.parse_authorization(bad)


def test_dates_and_nonce_are_checked() -> None:
    assert s.parse_date(s.format_date(NOW)) == NOW
    with pytest.raises(ValueError):
        s.format_date(datetime(2030, 1, 1))
    with pytest.raises(ValueError):
        s.parse_date("2030-01-01 00:00:00")
    with pytest.raises(ValueError):
        s.sign_request("GET", "http://h/", {}, b"", "id", "k", NOW, "")
