"""The metrics each process serves on /metrics count what actually happened."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator

import pytest

from capture.settings import SERVICES
from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from engine.local.broker import free_port
from tests.e2e.conftest import CERTAIN, GROUPS, HARD, Cluster, breaking_free, cluster, produce_raw
from tests.support import caught_up, doc_containing, eventually, metric_samples, total


@pytest.fixture(scope="module")
def measured(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, dict[str, int]]]:
    ports = {service: free_port() for service in SERVICES}
    per_instance = {service: {"POKESAGA_METRICS_PORT": str(port)} for service, port in ports.items()}
    faults = {  # transient errors everywhere, retried often enough never to run out
        "POKESAGA_FAULTS": "0.2",
        "POKESAGA_RETRY__INITIAL_INTERVAL": "0.001",
        "POKESAGA_RETRY__MAXIMUM_INTERVAL": "0.005",
        "POKESAGA_RETRY__MAXIMUM_ATTEMPTS": "40",
        "POKESAGA_COMPENSATION_RETRY__INITIAL_INTERVAL": "0.001",
        "POKESAGA_COMPENSATION_RETRY__MAXIMUM_INTERVAL": "0.005",
        # Counts here are exact: the flusher may re-publish a row its loop has not marked sent
        # within the grace period (allowed: consumers dedupe), which a loaded machine can reach.
        "POKESAGA_OUTBOX_GRACE_SECONDS": "300",
    }
    data = tmp_path_factory.mktemp("metrics")
    with cluster(kafka_bootstrap, data, per_instance=per_instance, **faults) as running:
        yield running, ports


def test_every_metric_counts_what_happened(measured: tuple[Cluster, dict[str, int]]) -> None:
    running, ports = measured
    run = uuid.uuid4().hex[:6]
    sagas = [
        *(start_event(f"m-ok-{run}-{i}", {"name": f"M{i}-{run}"}, {"name": "Pidgey", **CERTAIN}) for i in range(6)),
        *(start_event(f"m-el-{run}-{i}", {"name": f"E{i}-{run}"}, {"name": "Voltorb"}) for i in range(3)),
        *(start_event(f"m-fa-{run}-{i}", {"name": f"F{i}-{run}"}, {"name": "Rattata", "hp": 1}) for i in range(2)),
        *(start_event(breaking_free(f"m-bf-{run}-{i}", HARD), {"name": f"B{i}-{run}"}, HARD) for i in range(2)),
    ]
    before = [metric_samples(port) for port in ports.values()]

    async def scenario() -> dict[str, dict]:  # type: ignore[type-arg]
        async with TopicWatcher(running.settings.bootstrap, topics.OUTCOMES) as outcomes:
            await publish(running.settings.bootstrap, sagas)
            await produce_raw(running.settings.bootstrap, topics.STATUS, b"not an event", b"junk")
            await outcomes.wait_for([s.sagaid for s in sagas], timeout=60)
            await eventually(lambda: caught_up(running.settings.bootstrap, GROUPS), timeout=60, what="caught up")
            await outcomes.drain()
        return {s.sagaid: outcomes.outcomes[s.sagaid][0].data for s in sagas}

    outcomes = asyncio.run(scenario())
    after = [metric_samples(port) for port in ports.values()]

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("pokesaga_events_consumed_total", participant="status", type="PokemonEncountered") == len(sagas)
    assert grew("pokesaga_events_published_total", participant="delivery", type="PokemonDelivered") == 6
    assert grew("pokesaga_step_failures_total", participant="status", reason="electric_type_immune") == 3
    assert grew("pokesaga_step_failures_total", participant="combat", reason="fainted") == 2
    assert grew("pokesaga_step_failures_total", participant="pokeball", reason="broke_free") == 2
    undone = sum(len(o.get("undone", [])) for o in outcomes.values())
    assert grew("pokesaga_compensations_total", result="undone") == undone == 2 * 1 + 2 * 2  # fainted, broke free
    noops = grew("pokesaga_compensations_total", result="noop")
    assert noops == 3  # the Electric sagas: the status compensator had nothing to undo
    assert grew("pokesaga_dead_letters_total", participant="status", kind="not_json") == 1
    assert grew("pokesaga_schedule_to_start_latency_seconds_count", participant="combat") >= 6 + 2 + 2
    assert grew("pokesaga_retries_total", error="TransientFault") > 0  # the injected errors, retried
    assert grew("pokesaga_step_failures_total", reason="retries_exhausted") == 0
    for name in ("pokesaga_step_execution_latency_seconds_count", "pokesaga_outbox_backlog", "pokesaga_consumer_lag"):
        assert total(after, name) >= 0 and any(sample == name for found in after for sample, _ in found)
    # Every metric the documentation names is served.
    marker = "Metrics (prefix `pokesaga_`):"
    named = doc_containing(marker).split(marker, 1)[1].split("\n\n", 1)[0]
    served = {sample for found in after for sample, _ in found}
    for metric in re.findall(r"`(\w+)`", named):
        wanted = f"pokesaga_{metric}"
        assert {wanted, f"{wanted}_count", f"{wanted}_total"} & served, wanted
