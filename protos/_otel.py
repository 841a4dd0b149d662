"""OpenTelemetry behind ``sx.protos._tracing``: imported only when tracing is turned on.

Contexts are written and read with the globally configured propagator (W3C trace context unless the
application chose another), so a trace started by a caller of the OpenAPI continues through the
scheduler to the workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode

from sx.protos._tracing import Attributes, TraceSpan, Tracing

__all__ = ["OtelTracing"]


class _OtelSpan(TraceSpan):
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def carrier(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        if self._span.get_span_context().is_valid:
            propagate.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def fail(self, message: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, message))


class OtelTracing(Tracing):
    """Spans of the global tracer provider, under the tracer name ``component``."""

    enabled = True

    def __init__(self, component: str) -> None:
        # The proxy tracer follows a provider the application sets after this (tests do).
        self._tracer = trace.get_tracer(component)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None = None,
        attributes: Attributes | None = None,
    ) -> Iterator[TraceSpan]:
        context = propagate.extract(dict(parent)) if parent else None
        with self._tracer.start_as_current_span(name, context=context, attributes=attributes) as span:
            yield _OtelSpan(span)

    def current(self) -> TraceSpan:
        return _OtelSpan(trace.get_current_span())

    def traced_asgi(self, app: Any) -> Any:
        # Around the whole app: the OpenAPI endpoints answer without FastAPI's middleware stack.
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(
            app, excluded_urls="/health,/metrics", exclude_spans=["receive", "send"]
        )
