"""The worker's operator port (``metrics_port``): ``/metrics``, ``/health/live`` and ``/health/ready``.

A few GET routes for probes and scrapers, so a small HTTP/1.1 server on the worker's own loop rather
than a web framework: it answers between the worker's other work, never blocking it, and its answering
at all is what ``/health/live`` proves (the loop is responsive). Every response closes its connection.
Bodies of the health routes have the scheduler's envelope shape (``code``, ``success``, ``message``,
``data``), so one probe configuration reads both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

__all__ = ["MetricsServer"]

log = logging.getLogger("sx.worker")

_REQUEST_TIMEOUT = 10.0
"""Seconds a client gets to send its request head."""
_MAX_HEADER_LINES = 100
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class MetricsServer:
    """Serves the routes above on ``host:port`` (0: a free port; ``port`` says which once started)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        exposition: Callable[[], tuple[bytes, str]],
        not_ready: Callable[[], str | None],
    ) -> None:
        self.host = host
        self.port = port
        self._exposition = exposition
        self._not_ready = not_ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; OSError (naming the setting) when the port cannot be bound."""
        try:
            server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise OSError(
                f"metrics_port={self.port}: cannot listen on {self.host}: {exc.strerror or exc}"
            ) from exc
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                method, path = await _read_head(reader)
            status, body, content_type = self._answer(method, path)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass  # a client that went away or spoke no HTTP gets nothing more
        except Exception:
            log.exception("the metrics port failed to answer a request")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method not in ("GET", "HEAD"):
            return _envelope(405, f"method {method} not allowed: use GET")
        if path == "/metrics":
            body, content_type = self._exposition()
            return 200, body, content_type
        if path in ("/health", "/health/live"):
            return _envelope(200, data={"status": "ok"})
        if path == "/health/ready":
            reason = self._not_ready()
            if reason is None:
                return _envelope(200, data={"status": "ready"})
            return _envelope(503, f"not ready: {reason}")
        return _envelope(404, f"no route {path}: try /metrics, /health/live or /health/ready")


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path (query dropped) of a request; its headers are read and ignored."""
    parts = (await reader.readline()).decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request")
    for _ in range(_MAX_HEADER_LINES):
        if (await reader.readline()) in (b"\r\n", b"\n", b""):
            break
    else:
        raise ValueError("too many header lines")
    return parts[0].upper(), parts[1].split("?", 1)[0]


def _envelope(status: int, message: str = "", *, data: object = None) -> tuple[int, bytes, str]:
    body = {"code": status, "success": status == 200, "message": message, "data": data}
    return status, json.dumps(body, separators=(",", ":")).encode(), "application/json"
