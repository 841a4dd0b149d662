"""Registration on a Connect stream: the challenge-response handshake, and ``WorkerRejected`` when the
scheduler refuses the worker.

Register carries a fresh nonce and no key, the scheduler answers a challenge, and the worker proves the
group's app key with an HMAC over both nonces and its Register.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio

from sx.processors import SxError
from sx.protos import new_nonce, registration_proof
from sx.protos.v1 import scheduler_pb2

__all__ = ["WorkerRejected", "handshake"]

log = logging.getLogger("sx.worker")

# The scheduler ends the stream with these when it will never accept this worker as configured.
_FATAL_CODES = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
)


class WorkerRejected(SxError):
    """The scheduler refused to register this worker (wrong app key, unknown group, bad request).

    ``code`` is the gRPC status name and ``message`` the scheduler's explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"the scheduler refused this worker ({code}): {message}")


async def handshake(
    call: Any,
    register: scheduler_pb2.Register,
    *,
    app_key: str,
    dialing: str,
    follow: Callable[[scheduler_pb2.Redirect], None],
) -> scheduler_pb2.Registered | None:
    """Send ``register`` on ``call`` (a Connect stream to ``dialing``) and answer the challenge: the
    scheduler's Registered, or None when the stream did not register (after a warning, or after
    ``follow`` took a Redirect). Raises ``WorkerRejected`` when the scheduler refused this worker."""
    register.client_nonce = new_nonce()
    register.takes_batches = True
    await call.write(scheduler_pb2.WorkerMessage(register=register))
    challenge = await _reply(call, "challenge", "Register", dialing=dialing, follow=follow)
    if challenge is None:
        return None
    # An empty key sends an empty proof: the scheduler then says the key is missing.
    proof = registration_proof(app_key, register, challenge.challenge.server_nonce) if app_key else b""
    await call.write(scheduler_pb2.WorkerMessage(answer=scheduler_pb2.ChallengeAnswer(proof=proof)))
    welcome = await _reply(call, "registered", "the challenge answer", dialing=dialing, follow=follow)
    if welcome is None:
        return None
    registered: scheduler_pb2.Registered = welcome.registered
    return registered


async def _reply(
    call: Any, kind: str, to: str, *, dialing: str, follow: Callable[[scheduler_pb2.Redirect], None]
) -> scheduler_pb2.SchedulerMessage | None:
    """The scheduler's next message during registration when it is a ``kind``; None (after a
    warning) when it is not or the stream ended; raises ``WorkerRejected`` when it refused."""
    try:
        message = await call.read()
    except aio.AioRpcError as exc:
        if exc.code() in _FATAL_CODES:
            raise WorkerRejected(exc.code().name, exc.details() or "") from None
        raise
    if message is aio.EOF:
        code = await call.code()
        if code in _FATAL_CODES:
            raise WorkerRejected(code.name, await call.details() or "")
        log.warning("scheduler %s ended the stream before registering (%s)", dialing, code)
        return None
    got = message.WhichOneof("body")
    if got == "redirect":
        follow(message.redirect)
        return None
    if got != kind:
        log.warning("scheduler %s answered %s with %s, not %s", dialing, to, got, kind)
        return None
    reply: scheduler_pb2.SchedulerMessage = message
    return reply
