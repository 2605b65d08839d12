"""OpenTelemetry across the saga: every participant runs in this process against a real
broker, the SDK's in-memory exporter collects the spans, and one saga is one trace whose
spans follow its causal order, the W3C context carried by the Kafka record headers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from capture.bootstrap import PARTICIPANTS
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from engine.broker import kafka
from engine.worker.run import run_participants
from tests.conftest import new_broker
from tests.databases import with_databases
from tests.e2e.conftest import HARD, breaking_free
from tests.support import eventually


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process: this module is the only one to set it
    return exporter


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with new_broker(tmp_path_factory.mktemp("tracing") / "broker") as bootstrap:
        yield bootstrap


def of_saga(exported: tuple[ReadableSpan, ...], saga: str) -> list[ReadableSpan]:
    found = [s for s in exported if s.attributes and s.attributes.get("pokesaga.saga_id") == saga]
    return sorted(found, key=lambda s: s.start_time or 0)


async def test_one_saga_is_one_trace_whose_spans_follow_its_causal_order(
    spans: InMemorySpanExporter, broker: str, tmp_path: Path
) -> None:
    settings = with_databases(Settings(kafka_bootstrap_servers=broker, data_dir=tmp_path), "tracing")
    stop = asyncio.Event()
    running = asyncio.create_task(run_participants(CAPTURE, PARTICIPANTS.values(), settings, stop))
    try:
        await eventually(lambda: kafka.groups_stable(broker, PARTICIPANTS), timeout=60, what="every participant")
        saga = breaking_free("traced", HARD)  # paralyzed, weakened, breaks free, healed, restored
        async with TopicWatcher(broker, topics.OUTCOMES) as outcomes:
            await publish(broker, [start_event(saga, {"name": "Tracy"}, HARD)])
            assert (await outcomes.wait_for([saga], timeout=60))[saga].type == "CaptureFailed"

        async def all_spans() -> bool:
            return len(of_saga(spans.get_finished_spans(), saga)) >= 5

        await eventually(all_spans, timeout=30, what="the spans of every step")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await running
    chain = of_saga(spans.get_finished_spans(), saga)
    assert [s.name for s in chain] == [
        "status PokemonEncountered",
        "combat PokemonParalyzed",
        "pokeball PokemonWeakened",
        "combat.compensations PokemonBrokeFree",
        "status.compensations PokemonHealed",
    ]
    assert len({s.context.trace_id for s in chain if s.context}) == 1  # one saga, one trace
    assert chain[0].parent is None  # the start event came from a client with no trace context
    for cause, effect in zip(chain, chain[1:], strict=False):
        assert effect.parent is not None and cause.context is not None
        assert effect.parent.span_id == cause.context.span_id, (cause.name, effect.name)
