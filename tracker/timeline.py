"""A saga's timeline, from the events on its topics: pure functions, no I/O.

The tracker (a faust app) and ``pokesaga trace`` build timelines with the same code. A
timeline is a plain JSON document, so the tracker's table stores it as it is:

    {"saga_id", "trainer", "pokemon", "started_at", "ended_at", "outcome", "events": [...]}

each event ``{"id", "type", "service", "topic", "time", "causation", "seen_at", ...details}``.
Events are kept once per id (a re-published event is the same event) and in causal order:
each after the event that caused it, whatever order the topics delivered them in.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

OUTCOMES = {"PokemonDelivered": "delivered", "CaptureFailed": "failed"}
COMPENSATING = {
    "ParalysisFailed", "PokemonFainted", "PokemonBrokeFree", "OutOfPokeballs", "DeliveryFailed",
    "PokemonReleased", "PokemonHealed",
}  # fmt: skip
STATES = ("running", "compensating", "stuck", "delivered", "failed")
# Who acts next after each event: what a saga that stopped there is waiting on.
NEXT = {
    "PokemonEncountered": "status",
    "PokemonParalyzed": "combat",
    "PokemonWeakened": "pokeball",
    "PokemonCaught": "delivery",
    "ParalysisFailed": "status",
    "DeliveryFailed": "pokeball.compensations",
    "PokemonBrokeFree": "combat.compensations",
    "OutOfPokeballs": "combat.compensations",
    "PokemonReleased": "combat.compensations",
    "PokemonFainted": "status.compensations",
    "PokemonHealed": "status.compensations",
}


class NotAnEvent(ValueError):
    """A record that is not a pokesaga event: the tracker skips it (and counts it)."""


def parse(value: bytes | None, topic: str) -> dict[str, Any]:
    """The timeline entry of one record, or NotAnEvent."""
    try:
        doc = json.loads(value or b"")
    except ValueError:
        raise NotAnEvent("not JSON") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("id", "type", "sagaid")):
        raise NotAnEvent("not a CloudEvents document with id, type and sagaid")
    data: dict[str, Any] = doc["data"] if isinstance(doc.get("data"), dict) else {}
    entry: dict[str, Any] = {
        "id": doc["id"],
        "type": doc["type"],
        "saga_id": doc["sagaid"],
        "service": str(doc.get("source", "")).removeprefix("pokesaga/"),
        "topic": topic,
        "time": doc.get("time"),
        "causation": doc.get("causationid"),
    }
    for detail in ("reason", "failed_step", "detail", "undone"):
        if detail in data:
            entry[detail] = data[detail]
    if doc["type"] == "PokemonEncountered":
        trainer, pokemon = data.get("trainer") or {}, data.get("pokemon") or {}
        entry["trainer"] = trainer.get("name") if isinstance(trainer, dict) else None
        entry["pokemon"] = pokemon.get("name") if isinstance(pokemon, dict) else None
    return entry


def new(saga_id: str) -> dict[str, Any]:
    return {
        "saga_id": saga_id,
        "trainer": None,
        "pokemon": None,
        "started_at": None,
        "ended_at": None,
        "outcome": None,
        "events": [],
    }


def add(timeline: dict[str, Any], entry: dict[str, Any], seen_at: float) -> bool:
    """Add ``entry`` to ``timeline`` in causal order; False when that event was there already."""
    events: list[dict[str, Any]] = timeline["events"]
    if any(e["id"] == entry["id"] for e in events):
        return False
    if entry["type"] == "PokemonEncountered":
        timeline["trainer"], timeline["pokemon"] = entry.get("trainer"), entry.get("pokemon")
    events.append({k: v for k, v in entry.items() if k not in ("saga_id", "trainer", "pokemon")} | {"seen_at": seen_at})
    timeline["events"] = causal_order(events)
    first = timeline["events"][0]
    timeline["started_at"] = first.get("time")
    if entry["type"] in OUTCOMES and timeline["outcome"] is None:
        timeline["outcome"] = entry["type"]
        timeline["ended_at"] = entry.get("time")
    return True


def causal_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event after its cause; events whose cause is not here first; ties by event time."""
    by_id = {e["id"]: e for e in events}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for e in events:
        cause = e.get("causation") if e.get("causation") in by_id else None
        children.setdefault(cause, []).append(e)
    ordered: list[dict[str, Any]] = []
    stack = sorted(children.get(None, []), key=_when, reverse=True)
    while stack:
        e = stack.pop()
        ordered.append(e)
        stack.extend(sorted(children.get(e["id"], []), key=_when, reverse=True))
    return ordered


def _when(event: dict[str, Any]) -> tuple[str, str]:
    return (str(event.get("time") or ""), event["id"])


def state(timeline: dict[str, Any], now: float, stuck_after: float) -> str:
    if timeline["outcome"]:
        return OUTCOMES[timeline["outcome"]]
    if timeline["events"] and now - last_progress(timeline) > stuck_after:
        return "stuck"
    if any(e["type"] in COMPENSATING for e in timeline["events"]):
        return "compensating"
    return "running"


def last_progress(timeline: dict[str, Any]) -> float:
    return max((float(e["seen_at"]) for e in timeline["events"]), default=0.0)


def waiting_on(timeline: dict[str, Any]) -> str | None:
    """The participant that should act next, for a saga with no outcome yet."""
    if timeline["outcome"] or not timeline["events"]:
        return None
    return NEXT.get(timeline["events"][-1]["type"])


def duration_ms(timeline: dict[str, Any]) -> float | None:
    """End to end, from the start event's time to the outcome's."""
    start, end = timeline.get("started_at"), timeline.get("ended_at")
    if not (start and end):
        return None
    try:
        return round((_instant(end) - _instant(start)) * 1000, 1)
    except ValueError:
        return None


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def view(timeline: dict[str, Any], now: float, stuck_after: float) -> dict[str, Any]:
    """The JSON a user reads: the timeline with its state, what it waits on and its duration."""
    current = state(timeline, now, stuck_after)
    return timeline | {
        "state": current,
        "waiting_on": waiting_on(timeline) if current in ("running", "compensating", "stuck") else None,
        "duration_ms": duration_ms(timeline),
        "last_progress": last_progress(timeline),
    }
