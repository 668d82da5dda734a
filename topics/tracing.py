"""W3C trace context through Kafka headers, with OpenTelemetry spans.

A goal's `traceparent` header (set by the API, or by any producer) is continued by every
record derived from it: the planner copies the context of the record it handles onto the
records it sends, so the goal, its plan, its assignments and their feedback share one trace
id. Spans go to an OTLP collector only when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise
they are created (ids and context) and dropped.
"""
from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Iterable, Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

HEADER = "traceparent"
_propagator = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None
# the traceparent of the record a worker's agent is handling (per asyncio task)
CURRENT: ContextVar[str | None] = ContextVar("chimera_traceparent", default=None)


def tracer(service: str = "chimera") -> trace.Tracer:
    """The process's tracer; installs the provider (and the OTLP exporter when configured) once."""
    global _tracer
    if _tracer is None:
        provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                              service)}))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _tracer = trace.get_tracer("chimera")
    return _tracer


def parent_of(headers: Mapping[str, str] | Iterable[tuple[str, bytes]] | None) -> str | None:
    """The traceparent of a record's headers (a dict of str or Kafka's list of (name, bytes))."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in items:
        if k == HEADER and v:
            return v.decode("ascii", "replace") if isinstance(v, (bytes, bytearray)) else v
    return None


def trace_id_of(traceparent: str | None) -> str:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def outgoing(parent: str | None, name: str = "chimera.produce") -> tuple[dict[str, str], str]:
    """Headers for a record produced while handling `parent` (a traceparent, or None for a new
    trace) under a span named `name`, and the trace id (hex)."""
    ctx = _propagator.extract({HEADER: parent}) if parent else None
    with tracer().start_as_current_span(name, context=ctx, kind=trace.SpanKind.PRODUCER) as span:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        return carrier, format(span.get_span_context().trace_id, "032x")


def kafka_headers(name: str, parent: str | None = None) -> list[tuple[str, bytes]]:
    """Kafka headers continuing `parent` (default: the record being handled, CURRENT); none
    when there is no trace to continue."""
    parent = parent or CURRENT.get()
    if not parent:
        return []
    carrier, _ = outgoing(parent, name)
    return [(k, v.encode()) for k, v in carrier.items()]
