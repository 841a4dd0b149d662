"""The wire protocol between workers and the scheduler and between workers (``v1``: the ``.proto`` files
and the code generated from them), with what both sides need to speak it: app-key proofs on gRPC calls,
channel and server options, and the ACS3-HMAC-SHA256 signing of OpenAPI requests.

It is sx's own plumbing rather than an API for job authors (they use ``sx.processors``).
"""

from sx.protos._auth import (
    PEER_AUTH_HEADER,
    PROOF_WINDOW,
    check_proof,
    make_proof,
    peer_subject,
    task_caller_subject,
)
from sx.protos._options import MAX_MESSAGE_BYTES, channel_credentials, channel_options, server_options
from sx.protos._peer_auth import PeerAuthInterceptor, peer_channel
from sx.protos.signing import sign_request

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PEER_AUTH_HEADER",
    "PROOF_WINDOW",
    "PeerAuthInterceptor",
    "channel_credentials",
    "channel_options",
    "check_proof",
    "make_proof",
    "peer_channel",
    "peer_subject",
    "server_options",
    "sign_request",
    "task_caller_subject",
]
