"""The operator's routes beside the OpenAPI: liveness, readiness and the Prometheus exposition.

They need no signature (probes and scrapers hold no key) and are not in the OpenAPI document. What they
answer comes from the composition root through ``Operations``, so this module knows no scheduler part.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from starlette.responses import Response

from sx.scheduler.api._envelope import envelope

__all__ = ["Operations", "add_ops_routes"]

_UNAVAILABLE = 503


@dataclass(frozen=True, slots=True)
class Operations:
    """What the operator's routes ask the scheduler."""

    not_ready: Callable[[], Awaitable[str | None]]
    """Checks readiness now: None when ready, else the reason."""
    exposition: Callable[[], tuple[bytes, str]]
    """The metrics in the Prometheus text format, and its content type."""
    observe_request: Callable[[str, int, float], None]
    """Told each OpenAPI request: its endpoint path, HTTP status and seconds."""


def add_ops_routes(app: FastAPI, ops: Operations | None) -> None:
    """``/health`` and ``/health/live`` (the process answers), and with ``ops`` ``/health/ready``
    (200, or 503 with the reason) and ``/metrics``."""

    async def live(request: Request) -> Response:
        return envelope(str(uuid.uuid4()), data={"status": "ok"})

    for method in ("GET", "POST"):
        app.add_api_route("/health", live, methods=[method], name="Health", tags=["Health"])
    app.add_api_route("/health/live", live, methods=["GET"], include_in_schema=False)
    if ops is None:
        return

    async def ready(request: Request) -> Response:
        reason = await ops.not_ready()
        if reason is None:
            return envelope(str(uuid.uuid4()), data={"status": "ready"})
        return envelope(str(uuid.uuid4()), code=_UNAVAILABLE, message=f"not ready: {reason}")

    async def metrics(request: Request) -> Response:
        body, content_type = ops.exposition()
        return Response(content=body, media_type=content_type)

    app.add_api_route("/health/ready", ready, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
