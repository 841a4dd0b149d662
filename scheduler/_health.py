"""Readiness: the scheduler can do its work now (its store answers, its trigger and dispatch loops run).

``not_ready()`` checks now and returns the reason, or None; ``/health/ready`` calls it per request. A
watcher loop checks every ``interval`` seconds and turns the gRPC health status (the empty service and
``sx.v1.Scheduler``) SERVING or NOT_SERVING to match, so gRPC probes and load balancers follow it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from grpc_health.v1 import health, health_pb2

__all__ = ["GRPC_SERVICES", "Readiness"]

log = logging.getLogger("sx.scheduler.health")

GRPC_SERVICES = ("", "sx.v1.Scheduler")


class Readiness:
    """Answers whether the scheduler is ready, and keeps the gRPC health status in step (see above)."""

    def __init__(
        self,
        *,
        ping: Callable[[], Awaitable[None]],
        loops: Mapping[str, Callable[[], bool]],
        timeout: float = 3.0,
        interval: float = 1.0,
    ) -> None:
        self._ping = ping
        self._loops = loops
        self._timeout = timeout
        self._interval = interval
        self._servicer: health.aio.HealthServicer | None = None
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def not_ready(self) -> str | None:
        """None when ready, else why not; the gRPC status follows the answer."""
        reason = await self._check()
        await self._publish(reason)
        return reason

    async def _check(self) -> str | None:
        stopped = [name for name, running in self._loops.items() if not running()]
        if stopped:
            return f"not running: {', '.join(stopped)}"
        try:
            async with asyncio.timeout(self._timeout):
                await self._ping()
        except Exception as exc:
            # The first line only: drivers append SQL and links that say nothing to a probe.
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return f"store unreachable: {type(exc).__name__}: {detail}"[:300]
        return None

    async def _publish(self, reason: str | None) -> None:
        serving = reason is None
        servicer = self._servicer
        if servicer is None or serving == self._serving:
            return
        first, self._serving = self._serving is None, serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in GRPC_SERVICES:
            await servicer.set(service, status)
        if serving and not first:
            log.info("ready again")
        elif not serving:
            log.warning("not ready: %s", reason)

    async def start(self, servicer: health.aio.HealthServicer) -> None:
        """Publish the status on ``servicer`` now and then every interval."""
        self._servicer = servicer
        self._serving = None
        await self.not_ready()
        self._task = asyncio.create_task(self._watch(), name="sx-readiness")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.not_ready()
            except Exception:
                log.exception("readiness check failed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._servicer = None
