"""The wire protocol between workers and the scheduler and between workers (``v1``: the ``.proto`` files
and the code generated from them), with what both sides need to speak it: app-key proofs on gRPC calls and
at registration, batching what a stream sends (``take_batch``), channel and server options, the
ACS3-HMAC-SHA256 signing of OpenAPI requests, and the spans whose trace context the messages carry
(``tracing_for``; OpenTelemetry only when turned on).

It is sx's own plumbing rather than an API for job authors (they use ``sx.processors``).
"""

from sx.protos._auth import (
    PEER_AUTH_HEADER,
    PROOF_WINDOW,
    ProofChecker,
    TaskRequest,
    check_task_request,
    make_proof,
    new_nonce,
    payload_digest,
    peer_subject,
    registration_proof,
    sign_task_request,
    task_caller_subject,
)
from sx.protos._batching import BATCH_BYTES, BATCH_MESSAGES, take_batch
from sx.protos._options import MAX_MESSAGE_BYTES, channel_credentials, channel_options, server_options
from sx.protos._peer_auth import PeerAuthInterceptor, peer_channel
from sx.protos._tracing import NO_TRACING, OTEL_EXTRA_HINT, TraceSpan, Tracing
from sx.protos._tracing_config import tracing_for
from sx.protos.signing import sign_request

__all__ = [
    "BATCH_BYTES",
    "BATCH_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "NO_TRACING",
    "OTEL_EXTRA_HINT",
    "PEER_AUTH_HEADER",
    "PROOF_WINDOW",
    "PeerAuthInterceptor",
    "ProofChecker",
    "TaskRequest",
    "TraceSpan",
    "Tracing",
    "channel_credentials",
    "channel_options",
    "check_task_request",
    "make_proof",
    "new_nonce",
    "payload_digest",
    "peer_channel",
    "peer_subject",
    "registration_proof",
    "server_options",
    "sign_request",
    "sign_task_request",
    "take_batch",
    "task_caller_subject",
    "tracing_for",
]
