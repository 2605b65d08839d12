"""With no tracer provider, a step makes no span but passes the incoming trace context on."""

from __future__ import annotations

import pytest

from engine.observe import tracing
from tests.toy.kit import asked

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_without_a_provider_the_incoming_context_is_passed_on_as_it_came() -> None:
    if tracing.enabled():  # asked when it runs: a test run before it may have set one
        pytest.skip("a tracer provider is set in this process")
    envelope = asked("saga-1", "Ann")
    incoming = [("ce_type", b"Asked"), ("traceparent", TRACEPARENT.encode()), ("tracestate", b"k=v")]
    with tracing.step("first", envelope, "toy.first", 0, 7, incoming) as context:
        assert context() == [["traceparent", TRACEPARENT], ["tracestate", "k=v"]]
    with tracing.step("first", envelope, "toy.first", 0, 8, [("ce_type", b"x")]) as context:
        assert context() == []
