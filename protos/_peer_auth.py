"""App-key proofs on the worker-to-worker Peer service: the server interceptor that refuses calls
without a valid one, and the client channel that adds one to every call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from sx.protos._auth import PEER_AUTH_HEADER, ProofChecker, make_proof, payload_digest, peer_subject
from sx.protos._options import channel_options

__all__ = ["PeerAuthInterceptor", "peer_channel"]

log = logging.getLogger("sx.protos")

_PEER_METHOD_PREFIX = "/sx.v1.Peer/"


class PeerAuthInterceptor(aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Refuses (UNAUTHENTICATED) every Peer call without a valid, unused proof of the group's app key
    made for this call to this worker.

    Peers can start tasks, scripts included, so only workers of the same group may call; other
    services on the server (health) stay open. ``address`` gives this worker's advertised ``host:port``
    (known once the server listens), the one its peers dial and sign for.
    """

    def __init__(self, *, app_key: str, address: Callable[[], str]) -> None:
        self._app_key = app_key
        self._address = address
        self._proofs = ProofChecker()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        if not method.startswith(_PEER_METHOD_PREFIX):
            return await continuation(handler_call_details)
        proof = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == PEER_AUTH_HEADER:
                proof = value if isinstance(value, str) else value.decode("ascii", "replace")
        # Refused before the request is read when the proof cannot be good whatever the request is.
        why = self._proofs.screen(proof)
        if why is not None:
            return _refusal(method, why)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if handler.request_streaming or handler.response_streaming:
            return _refusal(method, "a streaming Peer call cannot carry a request proof")
        return grpc.unary_unary_rpc_method_handler(
            self._checked(method, proof, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _checked(self, method: str, proof: str, behavior: Callable[[Any, Any], Awaitable[Any]]) -> Any:
        # The proof covers the request, so it is checked once the request is read.
        async def checked(request: Any, context: Any) -> Any:
            why = self._proofs.check(
                self._app_key,
                proof,
                method=method,
                subject=peer_subject(self._address()),
                digest=payload_digest(request),
            )
            if why is not None:
                log.warning("refused peer call %s: %s", method, why)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, _refused(method, why))
            return await behavior(request, context)

        return checked


def _refused(method: str, why: str) -> str:
    return f"{method}: {why} ({PEER_AUTH_HEADER})"


def _refusal(method: str, why: str) -> grpc.RpcMethodHandler:
    log.warning("refused peer call %s: %s", method, why)

    async def refuse(request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _refused(method, why))

    return grpc.unary_unary_rpc_method_handler(refuse)


class _PeerAuthClientInterceptor(aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds a proof of the app key for the call, its request and the peer it goes to, to every call on a
    peer channel, so no call site can leave it out."""

    def __init__(self, *, app_key: str, address: str) -> None:
        self._app_key = app_key
        self._subject = peer_subject(address)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Any],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        raw = client_call_details.method
        method = raw.decode() if isinstance(raw, bytes) else str(raw)
        proof = make_proof(
            self._app_key, method=method, subject=self._subject, digest=payload_digest(request)
        )
        metadata = aio.Metadata(*(client_call_details.metadata or ()))
        metadata.add(PEER_AUTH_HEADER, proof)
        details = aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def peer_channel(address: str, *, app_key: str) -> aio.Channel:
    """A channel to the peer at ``address`` (its advertised ``host:port``) whose every call proves
    knowledge of ``app_key``."""
    return aio.insecure_channel(
        address,
        options=channel_options(),
        interceptors=[_PeerAuthClientInterceptor(app_key=app_key, address=address)],
    )
