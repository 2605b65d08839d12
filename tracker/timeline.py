"""The capture saga's timelines: the engine's timeline code (engine/observe/timeline/) bound to the
saga's declaration, showing the trainer and the wild Pokémon of each saga.

The tracker and ``pokesaga trace`` use the functions below; what they return is the tracker's
JSON: ``{"saga_id", "trainer", "pokemon", "started_at", "ended_at", "outcome", "events", "retries"}``.
"""

from __future__ import annotations

from typing import Any

from capture.saga import CAPTURE
from engine.observe.timeline import (  # noqa: F401  (re-exported: one import for the tracker and trace)
    MAX_DEAD_LETTERS,
    MAX_DETAIL,
    MAX_ERROR,
    MAX_EVENTS,
    MAX_ID,
    MAX_NAME,
    MAX_TYPE,
    NOTICE,
    REASONS,
    NotAnEvent,
    Timelines,
    canonical_rfc3339,
    causal_order,
    duration_ms,
    instant,
    last_progress,
    newest_first,
)


def _shown(data: dict[str, Any]) -> dict[str, Any]:
    """Who is catching what: the names in a start event's data."""
    return {field: who.get("name") if isinstance(who := data.get(field), dict) else None for field in FIELDS}


FIELDS = ("trainer", "pokemon")
TIMELINES = Timelines(CAPTURE, {"PokemonDelivered": "delivered", "CaptureFailed": "failed"}, _shown, FIELDS)

OUTCOMES = TIMELINES.outcomes
COMPENSATING = TIMELINES.compensating
STATES = TIMELINES.states
NEXT = TIMELINES.next
parse = TIMELINES.parse
parse_dead_letter = TIMELINES.parse_dead_letter
add_dead_letter = TIMELINES.add_dead_letter
new = TIMELINES.new
restore = TIMELINES.restore
add = TIMELINES.add
state = TIMELINES.state
waiting_on = TIMELINES.waiting_on
retrying = TIMELINES.retrying
settled_at = TIMELINES.settled_at
expired = TIMELINES.expired
view = TIMELINES.view
bars = TIMELINES.bars
