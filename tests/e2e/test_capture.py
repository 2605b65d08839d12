"""The capture saga end to end, as a user drives it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from capture.settings import Settings
from capture.starter import TopicWatcher, publish, start_event
from contracts import pokedex, topics
from engine.wire.envelope import Envelope
from tests.e2e.conftest import GROUPS, inspect_trainer, pokesaga, predicted_catch, produce_raw
from tests.support import caught_up, eventually

# Written by hand, as any client would: Caterpie (catch rate 255) at a sixth of its hp.
HAND_WRITTEN = """
{"specversion": "1.0", "id": "EVENT-ID", "source": "any-client", "type": "PokemonEncountered",
 "time": "2026-11-23T10:00:00Z", "subject": "SAGA-ID", "sagaid": "SAGA-ID",
 "datacontenttype": "application/json", "dataversion": 1,
 "data": {"trainer": {"name": "TRAINER", "lead": {"name": "Pikachu", "level": 60}},
          "pokemon": {"name": "Caterpie", "level": 30, "hp": 12, "max_hp": 72,
                      "status": "HEALTHY", "types": ["Bug"]}}}
"""


async def test_a_hand_written_start_event_from_a_plain_producer_is_delivered(running: Settings) -> None:
    saga, trainer = str(uuid.uuid4()), f"Sacha-{uuid.uuid4().hex[:6]}"
    document = HAND_WRITTEN.replace("EVENT-ID", str(uuid.uuid4())).replace("SAGA-ID", saga).replace("TRAINER", trainer)
    async with TopicWatcher(running.bootstrap, topics.OUTCOMES) as outcomes:
        await produce_raw(running.bootstrap, topics.STATUS, document.encode(), saga.encode())
        outcome = (await outcomes.wait_for([saga], timeout=60)).get(saga)
    assert outcome is not None, "no outcome on capture.outcomes"
    assert outcome.type == "PokemonDelivered"
    assert outcome.data["location"] == "party" and outcome.data["slot"] == 1

    view = inspect_trainer(running, trainer)
    assert [(p["pokemon"], p["slot"]) for p in view["delivery"]["party"]] == [("Caterpie", 1)]
    assert view["pokeball"]["balls"] == 4
    assert view["status"]["sagas"][0]["status"] == "PARALYZED"


async def test_fifty_sagas_each_reach_exactly_one_outcome(running: Settings) -> None:
    run = uuid.uuid4().hex[:6]
    certain: dict[str, Any] = {"catch_rate": 255, "level": 20}  # at a quarter of its hp: a >= 255

    def saga(kind: str, i: int, trainer: str, pokemon: dict[str, Any]) -> Envelope:
        return start_event(f"{run}-{kind}-{i}", {"name": trainer}, pokemon)

    electric = [
        saga("electric", i, f"E{i}-{run}", {"name": n})
        for i, n in enumerate(["Pikachu", "Voltorb", "Jolteon", "Zapdos", "Magnemite"] * 2)
    ]
    fainting = [saga("faint", i, f"F{i}-{run}", {"name": "Rattata", "hp": 1}) for i in range(10)]
    easy = [saga("easy", i, f"D{i}-{run}", {"name": "Pidgey", **certain, "hp": 10}) for i in range(12)]
    hoarder = [saga("hoard", i, f"Oak-{run}", {"name": "Oddish", **certain, "hp": 10}) for i in range(7)]
    wild = pokedex.NAMES
    chance = [saga("chance", i, f"C{i}-{run}", {"name": wild[(i * 37) % 151], "level": 40}) for i in range(11)]
    chance = [s for s in chance if not {"Electric"} & set(s.data["pokemon"]["types"])]
    sagas = electric + fainting + easy + hoarder + chance
    assert len(sagas) >= 50

    async with TopicWatcher(running.bootstrap, topics.OUTCOMES) as outcomes:
        await publish(running.bootstrap, sagas)
        await eventually(
            lambda: _all_outcomes(outcomes, {s.sagaid for s in sagas}), timeout=120, what="an outcome for every saga"
        )
        await eventually(lambda: caught_up(running.bootstrap, GROUPS), timeout=60, what="every group caught up")
        await outcomes.drain()

    seen = {s.sagaid: outcomes.outcomes.get(s.sagaid, []) for s in sagas}
    assert {k: len(v) for k, v in seen.items() if len(v) != 1} == {}, "every saga has exactly one outcome"
    first = {k: v[0] for k, v in seen.items()}

    for s in electric:
        o = first[s.sagaid]
        assert (o.type, o.data["reason"], o.data["undone"]) == ("CaptureFailed", "electric_type_immune", [])
    for s in fainting:
        o = first[s.sagaid]
        assert (o.type, o.data["reason"], o.data["failed_step"], o.data["undone"]) == (
            "CaptureFailed", "fainted", "combat", ["status"],
        )  # fmt: skip
        assert o.data["pokemon"]["status"] == "HEALTHY" and o.data["pokemon"]["hp"] == 1
    for s in easy:
        assert (first[s.sagaid].type, first[s.sagaid].data["slot"]) == ("PokemonDelivered", 1)
    hoarded = sorted(first[s.sagaid].type for s in hoarder)
    assert hoarded == ["CaptureFailed"] * 2 + ["PokemonDelivered"] * 5, "5 starter balls, 7 throws"
    for s in hoarder:
        o = first[s.sagaid]
        if o.type == "CaptureFailed":
            assert (o.data["reason"], o.data["undone"]) == ("out_of_pokeballs", ["combat", "status"])
    for s in chance:
        o = first[s.sagaid]
        caught = predicted_catch(s.sagaid, s.data["trainer"]["lead"], s.data["pokemon"])
        expected = "PokemonDelivered" if caught else "CaptureFailed"
        assert o.type == expected, s.sagaid
        if o.type == "CaptureFailed":
            assert (o.data["reason"], o.data["undone"]) == ("broke_free", ["combat", "status"])

    oak = inspect_trainer(running, f"Oak-{run}")
    assert oak["pokeball"]["balls"] == 0
    assert [p["slot"] for p in oak["delivery"]["party"]] == [1, 2, 3, 4, 5]
    assert all(a["healed"] for a in oak["combat"]["attacks"] if a["saga_id"] not in _delivered(first, hoarder))


async def _all_outcomes(watcher: TopicWatcher, wanted: set[str]) -> bool:
    await watcher.poll()
    return wanted <= watcher.outcomes.keys()


def _delivered(first: dict[str, Any], sagas: list[Envelope]) -> set[str]:
    return {s.sagaid for s in sagas if first[s.sagaid].type == "PokemonDelivered"}


def test_a_saga_can_be_started_and_awaited_from_the_cli(running: Settings) -> None:
    done = pokesaga(running, "start", "--pokemon", "Pikachu", "--trainer", "Cli", "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    saga_id, outcome = done.stdout.strip().splitlines()
    uuid.UUID(saga_id)
    assert outcome == "CaptureFailed: electric_type_immune at status; undone: nothing"
    shown = json.loads(pokesaga(running, "inspect", "saga", saga_id, "--json").stdout)
    assert shown["status"]["outcome"] == "failed:electric_type_immune" and shown["combat"] is None


async def test_a_deadline_given_to_the_cli_is_on_the_start_event(running: Settings) -> None:
    saga = f"deadline-{uuid.uuid4()}"
    async with TopicWatcher(running.bootstrap, topics.STATUS) as started:
        before = datetime.now(UTC)
        done = pokesaga(running, "start", "--saga-id", saga, "--deadline", "2m", "--pokemon", "Caterpie", "--hp", "5")
        after = datetime.now(UTC)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == saga
        await started.wait_for([saga], timeout=30)
    (record,) = [r for r in started.records if r.key == saga.encode()]
    document = json.loads(record.value or b"")
    deadline = datetime.fromisoformat(document["sagadeadline"])
    assert before + timedelta(minutes=2) <= deadline <= after + timedelta(minutes=2)
    assert document["type"] == "PokemonEncountered" and document["sagaid"] == saga


def test_a_saga_started_with_a_deadline_far_off_runs_as_any_other(running: Settings) -> None:
    done = pokesaga(running, "start", "--pokemon", "Pikachu", "--deadline", "1h", "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[1] == "CaptureFailed: electric_type_immune at status; undone: nothing"


def test_a_saga_started_past_its_deadline_fails_at_the_first_step_with_deadline_exceeded(running: Settings) -> None:
    done = pokesaga(
        running, "start", "--pokemon", "Caterpie", "--hp", "5", "--deadline", "1ms", "--wait", "--timeout", "60"
    )
    assert done.returncode == 0, done.stderr
    saga_id, outcome = done.stdout.strip().splitlines()
    assert outcome == "CaptureFailed: deadline_exceeded at status; undone: nothing"
    shown = json.loads(pokesaga(running, "inspect", "saga", saga_id, "--json").stdout)
    assert shown["status"]["outcome"] == "failed:deadline_exceeded" and shown["combat"] is None
