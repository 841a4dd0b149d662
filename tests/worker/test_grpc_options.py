"""Channel and server options, and the TLS settings of the scheduler channel."""

from __future__ import annotations

from pathlib import Path

import pytest

from sx.protos import MAX_MESSAGE_BYTES, channel_credentials, channel_options, server_options


def test_options_set_keepalive_and_message_sizes() -> None:
    for options in (dict(channel_options()), dict(server_options())):
        assert options["grpc.keepalive_time_ms"] == 20_000
        assert options["grpc.keepalive_timeout_ms"] == 10_000
        assert options["grpc.keepalive_permit_without_calls"] == 1
        assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES
        assert options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES


def test_plaintext_without_tls_files() -> None:
    assert channel_credentials(tls_ca=None, tls_cert=None, tls_key=None) is None


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ValueError, match="tls_cert is set but tls_key is not"):
        channel_credentials(tls_ca=None, tls_cert=cert, tls_key=None)


def test_unreadable_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_ca="):
        channel_credentials(tls_ca=tmp_path / "missing.pem", tls_cert=None, tls_key=None)


def test_ca_only_gives_credentials(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    assert channel_credentials(tls_ca=ca, tls_cert=None, tls_key=None) is not None
