"""Transient errors everywhere: retries absorb them, and a step that runs out of retries unwinds."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from capture.settings import Settings
from capture.starter import TopicWatcher, publish, start_event
from contracts import topics
from engine.wire.envelope import Envelope
from tests.e2e.conftest import GROUPS, assert_unwound, predicted_catch, services
from tests.support import caught_up, eventually

STEPS = ["status", "combat", "pokeball", "delivery"]
SAGAS = 200


@pytest.fixture(scope="module")
def faulty(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    env = {
        "POKESAGA_FAULTS": "0.3",  # every step and every compensator
        "POKESAGA_RETRY__INITIAL_INTERVAL": "0.002",
        "POKESAGA_RETRY__MAXIMUM_INTERVAL": "0.01",
        "POKESAGA_RETRY__MAXIMUM_ATTEMPTS": "3",  # 0.3³: about one step in 37 runs out
        "POKESAGA_COMPENSATION_RETRY__INITIAL_INTERVAL": "0.002",
        "POKESAGA_COMPENSATION_RETRY__MAXIMUM_INTERVAL": "0.01",
    }
    with services(kafka_bootstrap, tmp_path_factory.mktemp("faults"), **env) as running:
        yield running


def mix(run: str) -> list[tuple[Envelope, tuple[str, str, list[str]] | None]]:
    """Sagas with what each would end in without faults: None for delivered, else (reason, step, undone)."""
    sagas: list[tuple[Envelope, tuple[str, str, list[str]] | None]] = []
    for i in range(SAGAS):
        trainer, saga_id = {"name": f"T{i}-{run}"}, f"fault-{run}-{i}"
        kind = i % 4
        if kind == 0:
            sagas.append((start_event(saga_id, trainer, {"name": "Pidgey", "catch_rate": 255, "hp": 10}), None))
        elif kind == 1:
            sagas.append((start_event(saga_id, trainer, {"name": "Voltorb"}), ("electric_type_immune", "status", [])))
        elif kind == 2:
            sagas.append(
                (start_event(saga_id, trainer, {"name": "Rattata", "hp": 1}), ("fainted", "combat", ["status"]))
            )
        else:
            pokemon: dict[str, Any] = {"name": "Snorlax", "level": 45}
            envelope = start_event(saga_id, trainer, pokemon)
            caught = predicted_catch(saga_id, envelope.data["trainer"]["lead"], envelope.data["pokemon"])
            sagas.append((envelope, None if caught else ("broke_free", "pokeball", ["combat", "status"])))
    return sagas


async def test_with_30_percent_transient_errors_every_saga_reaches_exactly_one_outcome(faulty: Settings) -> None:
    sagas = mix(uuid.uuid4().hex[:6])
    wanted = {envelope.sagaid for envelope, _ in sagas}
    async with TopicWatcher(faulty.bootstrap, topics.OUTCOMES) as outcomes:
        await publish(faulty.bootstrap, [envelope for envelope, _ in sagas])

        async def all_done() -> bool:
            await outcomes.poll()
            return wanted <= outcomes.outcomes.keys()

        await eventually(all_done, timeout=240, what="an outcome for every saga")
        await eventually(lambda: caught_up(faulty.bootstrap, GROUPS), timeout=120, what="every group caught up")
        await outcomes.drain()

    figures: Counter[str] = Counter()
    for envelope, expected in sagas:
        seen = outcomes.outcomes[envelope.sagaid]
        assert len(seen) == 1, f"{envelope.sagaid}: {len(seen)} outcomes"
        outcome = seen[0]
        if outcome.type == "PokemonDelivered":
            assert expected is None and outcome.data["slot"] == 1
            figures["delivered"] += 1
            continue
        reason, step, undone = outcome.data["reason"], outcome.data["failed_step"], outcome.data["undone"]
        if reason == "retries_exhausted":
            last = STEPS.index(expected[1]) if expected else len(STEPS) - 1
            assert STEPS.index(step) <= last, f"{envelope.sagaid} failed at {step}, past where it ends"
            assert undone == list(reversed(STEPS[: STEPS.index(step)])), outcome.data
            assert "TransientFault" in outcome.data["detail"]
            figures[f"retries_exhausted at {step}"] += 1
        else:
            assert (reason, step, undone) == expected, (envelope.sagaid, outcome.data)
            figures[reason] += 1
        assert_unwound(faulty, envelope.sagaid, spent_ball=reason == "broke_free")
    print(f"\n{SAGAS} sagas with 30% transient errors: {dict(sorted(figures.items()))}")
    assert sum(figures.values()) == SAGAS
    assert sum(n for k, n in figures.items() if k.startswith("retries_exhausted")) > 0, "no step ran out of retries"
