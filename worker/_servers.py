"""The servers a worker listens on: the peer gRPC server (the Peer service and gRPC health) and, with a
``metrics_port``, the operator HTTP server of ``/metrics`` and ``/health/*``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from sx.protos import PeerAuthInterceptor, server_options
from sx.protos.v1 import peer_pb2_grpc
from sx.worker._metrics_server import MetricsServer
from sx.worker._peer import PeerService
from sx.worker._settings import WorkerSettings

__all__ = ["WorkerServers"]


class WorkerServers:
    """Starts, drains and stops one worker's servers, on the hosts and ports of its ``settings``."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings
        self._peer: aio.Server | None = None
        self._health: HealthServicer | None = None
        self._metrics: MetricsServer | None = None

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port`` of ``/metrics`` and ``/health/*`` once started; None while off."""
        server = self._metrics
        return f"http://{server.host}:{server.port}" if server is not None else None

    async def start_peer(self, service: PeerService, *, address: Callable[[], str]) -> int:
        """Serve ``service`` and gRPC health on ``peer_host:peer_port``; returns the port bound."""
        # Peers sign their calls for the address this worker advertises (set once the port is bound).
        auth = PeerAuthInterceptor(app_key=self._settings.app_key, address=address)
        server = aio.server(options=server_options(), interceptors=[auth])
        peer_pb2_grpc.add_PeerServicer_to_server(service, server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port: int = server.add_insecure_port(f"{self._settings.peer_host}:{self._settings.peer_port}")
        if port == 0:
            raise OSError(
                f"peer_port={self._settings.peer_port}: cannot listen on {self._settings.peer_host}"
            )
        await server.start()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        await health.set("sx.v1.Peer", health_pb2.HealthCheckResponse.SERVING)
        self._peer, self._health = server, health
        return port

    async def start_metrics(
        self,
        *,
        exposition: Callable[[], tuple[bytes, str]],
        draining: Callable[[], bool],
        connected: asyncio.Event,
    ) -> None:
        """Serve ``exposition`` on ``/metrics``, and ``/health/ready`` ready while ``connected`` and not
        ``draining``."""

        def not_ready() -> str | None:
            """Why ``/health/ready`` answers 503, or None: ready means registered with a scheduler now."""
            if draining():
                return "shutting down"
            if not connected.is_set():
                return f"not registered with a scheduler (connecting to {self._settings.server})"
            return None

        server = MetricsServer(
            host=self._settings.metrics_host,
            port=self._settings.metrics_port,
            exposition=exposition,
            not_ready=not_ready,
        )
        await server.start()
        self._metrics = server

    async def enter_graceful_shutdown(self) -> None:
        """gRPC health says NOT_SERVING from now on (the worker drains)."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    async def close(self) -> None:
        if self._metrics is not None:
            await self._metrics.close()
            self._metrics = None
        if self._peer is not None:
            await self._peer.stop(grace=1.0)
            self._peer = None
