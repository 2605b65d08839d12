"""The contract: events, envelope, Pokédex and the exported JSON Schemas."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from contracts import jsonschema, pokedex
from contracts.events import EVENT_TYPES, PokemonEncountered, PokemonParalyzed, Status
from engine.wire.envelope import Envelope, caused_id, caused_ids, derive_id, is_caused_id, wrap

DESIGN_EXAMPLE = """
{"specversion": "1.0", "id": "6f1c0a1e-0000-4000-8000-000000000001", "source": "any-client",
 "type": "PokemonEncountered", "time": "2026-11-23T10:00:00Z", "subject": "saga-1", "sagaid": "saga-1",
 "datacontenttype": "application/json", "dataversion": 1,
 "data": {"trainer": {"name": "Sacha", "lead": {"name": "Pikachu", "level": 60}},
          "pokemon": {"name": "Mewtwo", "level": 50, "hp": 200, "max_hp": 200,
                      "status": "HEALTHY", "types": ["Psychic"]}}}
"""


def test_the_exported_schemas_match_the_models() -> None:
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in jsonschema.SCHEMA_DIR.glob("*.json")}
    rendered = jsonschema.render()
    stale = sorted(name for name in rendered.keys() | on_disk.keys() if rendered.get(name) != on_disk.get(name))
    assert not stale, f"schemas drifted from the models ({stale}): run 'pokesaga schemas export'"


def test_every_event_of_the_design_has_a_schema() -> None:
    design = {
        "PokemonEncountered", "PokemonParalyzed", "PokemonWeakened", "PokemonCaught", "PokemonDelivered",
        "ParalysisFailed", "PokemonFainted", "PokemonBrokeFree", "OutOfPokeballs", "DeliveryFailed",
        "PokemonReleased", "PokemonHealed", "CaptureFailed",
    }  # fmt: skip
    assert set(EVENT_TYPES) == design
    assert {f"{name}.json" for name in design} | {"envelope.json"} == set(jsonschema.render())


def test_the_design_example_start_event_is_valid() -> None:
    envelope = Envelope.model_validate_json(DESIGN_EXAMPLE)
    event = PokemonEncountered.model_validate(envelope.data)
    assert event.pokemon.catch_rate == 3
    assert event.trainer.lead.name == "Pikachu" and event.trainer.lead.level == 60


def test_a_name_alone_is_filled_from_the_pokedex() -> None:
    event = PokemonEncountered.model_validate({"trainer": {"name": "Sacha"}, "pokemon": {"name": "snorlax"}})
    assert event.pokemon.name == "Snorlax"
    assert event.pokemon.types == ("Normal",)
    assert event.pokemon.max_hp == event.pokemon.hp == pokedex.lookup("Snorlax").max_hp(50)  # type: ignore[union-attr]
    assert event.pokemon.status is Status.HEALTHY
    assert event.trainer.lead.name == "Pikachu" and event.trainer.lead.level == 60


@pytest.mark.parametrize(
    "pokemon",
    [{"name": "Agumon"}, {"name": "Mew", "hp": 300, "max_hp": 200}, {"name": "Mew", "level": 0}, {}],
)
def test_an_invalid_pokemon_is_rejected(pokemon: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PokemonEncountered.model_validate({"trainer": {"name": "Sacha"}, "pokemon": pokemon})


def test_the_pokedex_has_the_151_first_generation_species() -> None:
    assert len(pokedex.NAMES) == 151
    assert pokedex.NAMES[0] == "Bulbasaur" and pokedex.NAMES[-1] == "Mew"
    assert {s.number for s in pokedex.SPECIES.values()} == set(range(1, 152))
    assert all(1 <= s.catch_rate <= 255 for s in pokedex.SPECIES.values())


@pytest.mark.parametrize(
    ("name", "meant"),
    [("Mewtoo", "Mewtwo"), ("pikachuu", "Pikachu"), ("Charizrd", "Charizard"), ("mr mine", "Mr. Mime")],
)
def test_an_unknown_pokemon_is_answered_with_the_species_meant(name: str, meant: str) -> None:
    assert pokedex.closest(name) == meant
    assert pokedex.unknown(name) == f"unknown Pokémon {name!r} (did you mean {meant}?)"
    with pytest.raises(ValidationError, match=rf"unknown Pokémon '{name}' \(did you mean {re.escape(meant)}\?\)"):
        PokemonEncountered.model_validate({"trainer": {"name": "Sacha"}, "pokemon": {"name": name}})


@pytest.mark.parametrize("name", ["Agumon", "", "x" * 10_000])
def test_a_name_like_no_species_gets_no_guess(name: str) -> None:
    assert pokedex.closest(name) is None
    assert pokedex.unknown(name[:10]).endswith("(not among the 151 of the Pokédex)")


def test_ids_derive_from_the_cause_so_a_replay_gives_the_same_ids() -> None:
    event = PokemonParalyzed.model_validate(
        {"trainer": {"name": "A"}, "pokemon": {"name": "Mew"}, "previous_status": "HEALTHY"}
    )
    first = wrap(event, saga_id="s", source="pokesaga/status", causation_id="cause-1")
    again = wrap(event, saga_id="s", source="pokesaga/status", causation_id="cause-1")
    assert first.id == again.id == caused_id("s", "cause-1", "PokemonParalyzed")
    assert wrap(event, saga_id="s", source="x", causation_id="cause-2").id != first.id


def test_a_caused_id_includes_the_saga_so_two_sagas_started_under_one_id_get_ids_of_their_own() -> None:
    event = PokemonParalyzed.model_validate(
        {"trainer": {"name": "A"}, "pokemon": {"name": "Mew"}, "previous_status": "HEALTHY"}
    )
    first = wrap(event, saga_id="saga-a", source="pokesaga/status", causation_id="client-start-1")
    second = wrap(event, saga_id="saga-b", source="pokesaga/status", causation_id="client-start-1")
    assert first.id != second.id
    # The parts are JSON-encoded: "/" inside an id cannot make two lists of parts one text.
    assert caused_id("a/b", "c", "T") != caused_id("a", "b/c", "T")
    assert caused_id("s", "a/b", "T") != caused_id("s", "a", "b/T")
    # ... and none is an id derived the old way ("/"-joined).
    assert caused_id("s", "c", "T") not in {derive_id("s", "c", "T"), derive_id("c", "T")}


def test_an_id_derived_before_the_saga_id_was_in_it_is_still_taken_as_derived() -> None:
    event = PokemonParalyzed.model_validate(
        {"trainer": {"name": "A"}, "pokemon": {"name": "Mew"}, "previous_status": "HEALTHY"}
    )
    now = wrap(event, saga_id="s", source="pokesaga/status", causation_id="cause-1")
    before = now.model_copy(update={"id": derive_id("cause-1", "PokemonParalyzed")})  # what the old code wrote
    assert caused_ids("s", "cause-1", "PokemonParalyzed") == (now.id, before.id)
    assert is_caused_id(now) and is_caused_id(before)
    assert not is_caused_id(now.model_copy(update={"id": "chosen-by-a-client"}))
    assert not is_caused_id(now.model_copy(update={"causationid": None}))
    assert not is_caused_id(now.model_copy(update={"sagaid": "another-saga"}))


def test_the_envelope_is_structured_mode_cloudevents_json() -> None:
    event = PokemonEncountered.model_validate({"trainer": {"name": "A"}, "pokemon": {"name": "Mew"}})
    doc = json.loads(wrap(event, saga_id="s", source="pokesaga/cli", causation_id=None).to_json())
    assert doc["specversion"] == "1.0" and doc["type"] == "PokemonEncountered"
    assert doc["subject"] == doc["sagaid"] == "s"
    assert doc["datacontenttype"] == "application/json" and doc["dataversion"] == 1
    assert "causationid" not in doc  # a start event has no cause
