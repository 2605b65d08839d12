"""Every bad record gets a one-line reason for its dead letter."""

from __future__ import annotations

import json

import pytest

from contracts.events import EVENT_TYPES
from engine.codec import BadRecord, decode_envelope, decode_event

VALID = {
    "specversion": "1.0", "id": "e1", "source": "t", "type": "PokemonEncountered", "sagaid": "s",
    "data": {"trainer": {"name": "A"}, "pokemon": {"name": "Mew"}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "empty"),
        (b"\xff\xfe not utf-8", "not_json"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_cloudevent"),
        (json.dumps({"hello": "world"}).encode(), "not_cloudevent"),
        (json.dumps({**VALID, "specversion": "0.3"}).encode(), "not_cloudevent"),
    ],
)
def test_a_record_that_is_not_a_cloudevent_is_refused_with_its_kind(value: bytes | None, kind: str) -> None:
    with pytest.raises(BadRecord) as caught:
        decode_envelope(value)
    assert caught.value.kind == kind
    assert "\n" not in caught.value.reason


def test_an_event_that_fails_validation_names_the_field() -> None:
    bad = {**VALID, "data": {"trainer": {"name": "A"}, "pokemon": {"name": "Mew", "level": "high"}}}
    with pytest.raises(BadRecord) as caught:
        decode_event(decode_envelope(json.dumps(bad).encode()), EVENT_TYPES)
    assert caught.value.kind == "invalid_data"
    assert "pokemon.level" in caught.value.reason


def test_a_valid_record_decodes() -> None:
    event = decode_event(decode_envelope(json.dumps(VALID).encode()), EVENT_TYPES)
    assert event.pokemon.name == "Mew"
