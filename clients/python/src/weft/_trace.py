"""Where a request's W3C trace context comes from (docs/protocol.md, "Trace
context"). By default the OpenTelemetry API's current span, when the
``opentelemetry`` package is installed: the propagator the application set
up writes ``traceparent`` as it would into HTTP headers. Without the package
nothing is sent and nothing is imported per call."""

from __future__ import annotations

from typing import Callable, Optional

#: Returns the ``traceparent`` to send with a request, or None.
TraceSource = Callable[[], Optional[str]]


def opentelemetry_source() -> TraceSource | None:
    """The current OpenTelemetry span's traceparent, or None if the
    ``opentelemetry`` package is not installed."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return None

    def current() -> str | None:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier.get("traceparent")

    return current
