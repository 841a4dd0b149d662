"""gRPC options both sides of the protocol use: keepalive, message sizes, and TLS credentials for channels."""

from __future__ import annotations

from pathlib import Path

import grpc

__all__ = [
    "KEEPALIVE_TIMEOUT_MS",
    "KEEPALIVE_TIME_MS",
    "MAX_MESSAGE_BYTES",
    "GrpcOptions",
    "channel_credentials",
    "channel_options",
    "server_options",
]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Both directions; large enough for a page of map subtasks (each up to 64 KiB)."""

KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000

GrpcOptions = list[tuple[str, int]]


def channel_options() -> GrpcOptions:
    """Options for a client channel: keepalive pings even when idle, and the message size limits."""
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Reconnect quickly after a scheduler restart; our own loop adds the backoff.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]


def server_options() -> GrpcOptions:
    """Options for a server: accept the clients' keepalive pings, and the message size limits."""
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]


def channel_credentials(
    *, tls_ca: Path | None, tls_cert: Path | None, tls_key: Path | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials for the scheduler channel, or None for plaintext when no file is given.

    ``tls_cert`` and ``tls_key`` (a client certificate) go together; ``tls_ca`` alone verifies the server.
    """
    if tls_ca is None and tls_cert is None and tls_key is None:
        return None
    if (tls_cert is None) != (tls_key is None):
        given, missing = ("tls_cert", "tls_key") if tls_key is None else ("tls_key", "tls_cert")
        raise ValueError(f"{given} is set but {missing} is not: a client certificate needs both")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls_ca, "tls_ca"),
        private_key=_read(tls_key, "tls_key"),
        certificate_chain=_read(tls_cert, "tls_cert"),
    )


def _read(path: Path | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{field}={str(path)!r}: cannot be read: {exc.strerror}") from exc
