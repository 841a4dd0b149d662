"""Tracing seen from sx's code: spans whose context travels in the protocol's ``trace_context`` maps.

``tracing_for(enabled)`` (``_tracing_config``) returns a ``Tracing``. Disabled (the default) it is this
module's no-op one, so nothing imports OpenTelemetry; enabled, it is ``sx.protos._otel``'s, which needs
the ``otel`` extra
(``pip install 'sx-worker[otel]'``) and sends spans to the global tracer provider (set up by the
application, or by ``opentelemetry-instrument`` from the ``OTEL_*`` environment).

A span is opened with ``with tracing.span(name, parent=carrier, attributes=...) as span:``; it is the
current span inside the block (so spans opened there, on this task or in a hook's thread, are its
children). ``parent`` is a carrier (``traceparent``/``tracestate`` keys) from a message: the span
continues that trace; None or empty continues the current one. ``span.carrier()`` is what to put in a
message for the other side to continue it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["NO_TRACING", "OTEL_EXTRA_HINT", "TraceSpan", "Tracing"]

Attributes = Mapping[str, str | int | float | bool]

OTEL_EXTRA_HINT = "tracing needs OpenTelemetry: pip install 'sx-worker[otel]'"


class TraceSpan:
    """One open span; this base records nothing."""

    def carrier(self) -> dict[str, str]:
        """The span's context as message fields (empty when nothing is recorded)."""
        return {}

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        """Add an attribute (ignored by the no-op span)."""

    def fail(self, message: str) -> None:
        """Mark the span's outcome an error with ``message``."""


_NO_SPAN = TraceSpan()


class Tracing:
    """Opens spans; this base is the no-op one used while tracing is off."""

    enabled = False

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None = None,
        attributes: Attributes | None = None,
    ) -> Iterator[TraceSpan]:
        yield _NO_SPAN

    def current(self) -> TraceSpan:
        """The current span (of this task or thread)."""
        return _NO_SPAN

    def traced_asgi(self, app: Any) -> Any:
        """``app`` (an ASGI app) with a server span per HTTP request, continuing the caller's trace
        from its ``traceparent`` header; ``app`` itself while tracing is off."""
        return app


NO_TRACING = Tracing()
