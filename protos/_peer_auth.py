"""App-key proofs on the worker-to-worker Peer service: the server interceptor that refuses calls
without one, and the client channel that adds one to every call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from sx.protos._auth import PEER_AUTH_HEADER, check_proof, make_proof, peer_subject
from sx.protos._options import channel_options

__all__ = ["PeerAuthInterceptor", "peer_channel"]

log = logging.getLogger("sx.protos")

_PEER_METHOD_PREFIX = "/sx.v1.Peer/"


class PeerAuthInterceptor(aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Refuses (UNAUTHENTICATED) every Peer call without a valid proof of the group's app key.

    Peers can start tasks, scripts included, so only workers of the same group may call; other
    services on the server (health) stay open.
    """

    def __init__(self, *, app_key: str) -> None:
        self._app_key = app_key

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        if not method.startswith(_PEER_METHOD_PREFIX):
            return await continuation(handler_call_details)
        proof = ""
        metadata = handler_call_details.invocation_metadata or ()
        for key, value in metadata:
            if key == PEER_AUTH_HEADER:
                proof = value if isinstance(value, str) else value.decode("ascii", "replace")
        why = check_proof(self._app_key, peer_subject(method), proof)
        if why is None:
            return await continuation(handler_call_details)
        log.warning("refused peer call %s: %s", method, why)

        async def refuse(request: Any, context: Any) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{method}: {why} ({PEER_AUTH_HEADER})")

        return grpc.unary_unary_rpc_method_handler(refuse)


class _PeerAuthClientInterceptor(aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the app key proof to every call on a peer channel, so no call site can leave it out."""

    def __init__(self, *, app_key: str) -> None:
        self._app_key = app_key

    async def intercept_unary_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Any],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        raw = client_call_details.method
        method = raw.decode() if isinstance(raw, bytes) else str(raw)
        metadata = aio.Metadata(*(client_call_details.metadata or ()))
        metadata.add(PEER_AUTH_HEADER, make_proof(self._app_key, peer_subject(method)))
        details = aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def peer_channel(address: str, *, app_key: str) -> aio.Channel:
    """A channel to the peer at ``address`` whose every call proves knowledge of ``app_key``."""
    return aio.insecure_channel(
        address, options=channel_options(), interceptors=[_PeerAuthClientInterceptor(app_key=app_key)]
    )
