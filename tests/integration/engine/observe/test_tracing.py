"""OpenTelemetry across a saga (engine.observe.tracing): every participant of the toy saga runs in
this process against a real broker, the SDK's in-memory exporter collects the spans, and one saga
is one trace whose spans follow its causal order, the W3C context carried by the Kafka record headers."""

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

from engine.broker import kafka
from engine.worker.run import run_participants
from tests.conftest import new_broker
from tests.databases import with_databases
from tests.support import eventually
from tests.toy.events import FIRST, OUTCOMES
from tests.toy.kit import TopicWatcher, asked, produce
from tests.toy.saga import TOY, Settings


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
        asyncio.run(kafka.ensure_topics(bootstrap, TOY.all_topics(), 3))
        yield bootstrap


def of_saga(exported: tuple[ReadableSpan, ...], saga: str) -> list[ReadableSpan]:
    found = [s for s in exported if s.attributes and s.attributes.get("pokesaga.saga_id") == saga]
    return sorted(found, key=lambda s: s.start_time or 0)


async def test_one_saga_is_one_trace_whose_spans_follow_its_causal_order(
    spans: InMemorySpanExporter, broker: str, tmp_path: Path
) -> None:
    settings = with_databases(Settings(kafka_bootstrap_servers=broker, data_dir=tmp_path), "tracing")
    stop = asyncio.Event()
    running = asyncio.create_task(run_participants(TOY, TOY.participants.values(), settings, stop))
    try:
        await eventually(lambda: kafka.groups_stable(broker, TOY.participants), timeout=60, what="every participant")
        saga = "traced"  # done, refused, undone
        async with TopicWatcher(broker, OUTCOMES) as outcomes:
            await produce(broker, FIRST, asked(saga, "Tracy", refuse=True).to_json(), key=saga.encode())
            assert (await outcomes.wait_for([saga], timeout=60))[saga].type == "ToyFailed"

        async def all_spans() -> bool:
            return len(of_saga(spans.get_finished_spans(), saga)) >= 3

        await eventually(all_spans, timeout=30, what="the spans of every step")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await running
    chain = of_saga(spans.get_finished_spans(), saga)
    assert [s.name for s in chain] == [
        "first Asked",
        "second FirstDone",
        "first.compensations SecondFailed",
    ]
    assert len({s.context.trace_id for s in chain if s.context}) == 1  # one saga, one trace
    assert chain[0].parent is None  # the start event came from a client with no trace context
    for cause, effect in zip(chain, chain[1:], strict=False):
        assert effect.parent is not None and cause.context is not None
        assert effect.parent.span_id == cause.context.span_id, (cause.name, effect.name)
