"""Building a timeline from entries: each event once per id (a re-published event is the same
event) and in causal order, each after the event that caused it, whatever order the topics
delivered them in; the latest retry notice of each participant; the saga's first dead letters.
"""

from __future__ import annotations

from typing import Any

from engine.observe.timeline.fields import MAX_DEAD_LETTERS, MAX_EVENTS, NotAnEvent, finite_seconds
from engine.observe.timeline.shape import SagaShape
from engine.observe.timeline.times import instant
from engine.wire.notices import TYPE as NOTICE

NOTICE_FIELDS = (
    "id", "causation", "participant", "event_type", "attempt", "maximum_attempts", "next_attempt_at", "error", "time",
)  # fmt: skip


def supersedes(notice: dict[str, Any], held: dict[str, Any], events: list[dict[str, Any]]) -> bool:
    """Whether ``notice`` is later than ``held``, its participant's latest so far, by what the
    tracker saw rather than by the times a notice claims (any client can claim any time).

    About the same record: the one announcing the later attempt (each retry counts one more),
    then the one read later, then the greater id: whatever order they are read in, the same one
    is kept, and a re-published copy of an earlier attempt changes nothing. About another record
    (a participant acting again in the saga): the one read later, as its participant published
    them, unless the participant has answered that record already (an event caused by it is on
    the timeline): a copy of a notice about it, re-published late, is not the latest."""
    if notice["causation"] == held["causation"]:
        return (notice["attempt"], notice["seen_at"], notice["id"]) > (held["attempt"], held["seen_at"], held["id"])
    if any(e.get("causation") == notice["causation"] for e in events):
        return False
    return (notice["seen_at"], notice["id"]) > (held["seen_at"], held["id"])


def causal_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event after its cause; events whose cause is not here first; ties by event time.

    Every event comes out once, even in a cycle of causes (which only a forger writes): the
    cycle is entered at its earliest event."""
    by_id = {e["id"]: e for e in events}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for e in events:
        cause = e.get("causation") if e.get("causation") in by_id else None
        children.setdefault(cause, []).append(e)
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()
    roots = children.get(None, [])
    while True:
        stack = sorted(roots, key=_when, reverse=True)
        while stack:
            e = stack.pop()
            if e["id"] in placed:
                continue
            placed.add(e["id"])
            ordered.append(e)
            stack.extend(sorted(children.get(e["id"], []), key=_when, reverse=True))
        if len(ordered) >= len(by_id):
            return ordered
        roots = [min((e for e in by_id.values() if e["id"] not in placed), key=_when)]


def _when(event: dict[str, Any]) -> tuple[float, str]:
    return (instant(event.get("time")), str(event["id"]))


def letter_key(letter: dict[str, Any]) -> tuple[Any, ...]:
    return (letter.get("topic"), letter.get("partition"), letter.get("offset"))


class Building(SagaShape):
    """A new timeline, and entries (from ``Reading``) added to it."""

    def new(self, saga_id: str) -> dict[str, Any]:
        return {
            "saga_id": saga_id,
            **dict.fromkeys(self.summary_fields),
            "started_at": None,
            "ended_at": None,
            "outcome": None,
            "events": [],
            "retries": {},
            "dead_letters": [],
            "trace_id": None,
        }

    def add(self, timeline: dict[str, Any], entry: dict[str, Any], seen_at: float) -> bool:
        """Add ``entry`` (from ``parse``) to ``timeline`` (from ``new`` or ``restore``) in causal order.

        False when that event was there already; NotAnEvent when the timeline is full. A retry
        notice is kept if it is its participant's latest (see ``supersedes``); False if not."""
        if entry["type"] == NOTICE:
            return self._add_notice(timeline, entry, seen_at)
        events: list[dict[str, Any]] = timeline["events"]
        if any(e["id"] == entry["id"] for e in events):
            return False
        if len(events) >= MAX_EVENTS:
            raise NotAnEvent("too_many_events", f"saga {timeline['saga_id']!r} has {MAX_EVENTS} events already")
        if entry["type"] == self.start:
            timeline.update({field: entry.get(field) for field in self.summary_fields})
        if timeline.get("trace_id") is None and entry.get("trace_id"):
            timeline["trace_id"] = entry["trace_id"]  # one saga, one trace: the first event's
        event = {k: v for k, v in entry.items() if k not in ("saga_id", "trace_id", *self.summary_fields)}
        events.append(event | {"seen_at": finite_seconds(seen_at)})
        timeline["events"] = causal_order(events)
        first = timeline["events"][0]
        timeline["started_at"] = first.get("time")
        if entry["type"] in self.outcomes and timeline["outcome"] is None:
            timeline["outcome"] = entry["type"]
            timeline["ended_at"] = entry.get("time")
        return True

    def _add_notice(self, timeline: dict[str, Any], entry: dict[str, Any], seen_at: float) -> bool:
        notice = {field: entry[field] for field in NOTICE_FIELDS} | {"seen_at": finite_seconds(seen_at)}
        retries: dict[str, dict[str, Any]] = timeline["retries"]
        held = retries.get(notice["participant"])
        if held is not None and (held["id"] == notice["id"] or not supersedes(notice, held, timeline["events"])):
            return False
        retries[notice["participant"]] = notice
        return True

    def add_dead_letter(self, timeline: dict[str, Any], entry: dict[str, Any], seen_at: float) -> bool:
        """Add a dead letter (from ``parse_dead_letter``) to its saga's timeline: False when it is
        there already; kept up to ``MAX_DEAD_LETTERS`` (the first ones: what went wrong first)."""
        letters: list[dict[str, Any]] = timeline["dead_letters"]
        if any(letter_key(d) == letter_key(entry) for d in letters):
            return False
        if len(letters) >= MAX_DEAD_LETTERS:
            raise NotAnEvent("too_many_events", f"saga {timeline['saga_id']!r} has {MAX_DEAD_LETTERS} dead letters")
        letters.append({k: v for k, v in entry.items() if k != "saga_id"} | {"seen_at": finite_seconds(seen_at)})
        return True
