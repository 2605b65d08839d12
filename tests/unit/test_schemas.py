"""The capture saga's released schemas (contracts/schemas/released/): every event's current version is
released and compatible (what ``make lint`` checks), a real event's change is refused with its lines,
and ``pokesaga schemas`` keeps its ``export`` beside ``check`` and ``release``."""

from __future__ import annotations

import copy
import json

import pytest

from capture.cli import build_parser, main
from capture.saga import CAPTURE
from contracts import jsonschema
from contracts.events import PokemonEncountered
from engine.schemas import breaking, check, read

pytestmark = pytest.mark.no_database


def test_every_capture_event_is_released_and_compatible(capsys: pytest.CaptureFixture[str]) -> None:
    assert CAPTURE.schemas == jsonschema.RELEASED_DIR
    assert check(CAPTURE.types, read(jsonschema.RELEASED_DIR), "pokesaga schemas release") == []
    assert main(["schemas", "check"]) == 0
    assert capsys.readouterr().out == f"{len(CAPTURE.types)} event types, {len(CAPTURE.types)} versions: compatible\n"


def test_a_bound_lowered_in_a_shared_model_is_refused_wherever_it_is_read() -> None:
    released = json.loads((jsonschema.RELEASED_DIR / "PokemonEncountered" / "v1.json").read_text(encoding="utf-8"))
    current = copy.deepcopy(PokemonEncountered.model_json_schema())
    current["$defs"]["Pokemon"]["properties"]["level"]["maximum"] = 90
    del current["$defs"]["Trainer"]["properties"]["lead"]
    assert breaking("PokemonEncountered", 1, released, current) == [
        "PokemonEncountered v1: pokemon.level: maximum lowered from 100 to 90",
        "PokemonEncountered v1: trainer.lead: field removed",
    ]


def test_schemas_takes_export_check_and_release() -> None:
    for action in ("export", "check", "release"):
        assert build_parser().parse_args(["schemas", action]).action == action
