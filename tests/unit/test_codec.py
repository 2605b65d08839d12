"""Every bad record gets a one-line reason for its dead letter."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import EVENT_TYPES
from engine.wire.codec import BadRecord, _decode_carefully, decode_envelope, decode_event
from engine.wire.envelope import Envelope

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


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.sampled_from(["1.0", "0.3", 1]), "id": st.text(max_size=5) | st.integers(),
        "source": st.text(max_size=5), "type": st.sampled_from(["PokemonEncountered", ""]),
        "sagaid": st.text(max_size=5), "time": st.sampled_from(["2026-11-23T10:00:00Z", "yesterday", 5]),
        "dataversion": st.sampled_from([1, 1.0, "1", 0, True]), "data": _json, "x-ext": _json,
        "sagadeadline": st.sampled_from(["2026-11-23T10:00:00Z", "2026-11-23", 7]),
    },
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_fields, st.sampled_from([b"", b" ", b"\n", b" x", b"\xef\xbb\xbf"]))
def test_the_fast_parse_accepts_only_what_the_careful_one_accepts_and_reads_it_the_same(
    document: dict[str, object], around: bytes
) -> None:
    """pydantic parses a record's bytes first; the stdlib's parser decides and explains otherwise.
    Whatever the fast way accepts, the careful way accepts the same."""
    value = around.strip(b" x\n") + json.dumps(document).encode() + (around if around != b"\xef\xbb\xbf" else b"")
    try:
        fast = Envelope.model_validate_json(value)
    except Exception:
        return
    assert _decode_carefully(value) == fast == decode_envelope(value)
