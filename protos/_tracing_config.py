"""Choosing the tracing: the no-op one, or OpenTelemetry's, imported only when asked for."""

from __future__ import annotations

from sx.protos._tracing import NO_TRACING, OTEL_EXTRA_HINT, Tracing

__all__ = ["tracing_for"]


def tracing_for(enabled: bool, *, component: str) -> Tracing:
    """The no-op tracing, or (``enabled``) OpenTelemetry's under the tracer name ``component``.

    Raises ValueError naming the setting when OpenTelemetry is not installed.
    """
    if not enabled:
        return NO_TRACING
    try:
        from sx.protos._otel import OtelTracing
    except ImportError as exc:
        raise ValueError(f"tracing=true: {OTEL_EXTRA_HINT} ({exc})") from None
    return OtelTracing(component)
