"""Derived ids (engine.wire.envelope): the fast uuid5 must give the stdlib's text, for any name."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from engine.wire.envelope import CAUSED, NAMESPACE, caused_id, derive_id, uuid5_text


@given(st.text(), st.uuids())
def test_uuid5_text_is_the_stdlib_uuid5_for_any_name_and_namespace(name: str, namespace: uuid.UUID) -> None:
    assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))


def test_derived_ids_are_the_ones_recorded_before() -> None:
    """Ids already on the topics must be derived the same way after the change: replays depend on it."""
    assert derive_id("saga-1", "PokemonEncountered") == str(uuid.uuid5(NAMESPACE, "saga-1/PokemonEncountered"))
    assert caused_id("saga-1", "cause", "PokemonWeakened") == str(
        uuid.uuid5(CAUSED, '["saga-1", "cause", "PokemonWeakened"]')
    )
