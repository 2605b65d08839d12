"""Restoring a timeline from whatever a table holds (a timeline written by an older tracker, or
anything else a client wrote to the changelog): a timeline every function here can use, every
string bounded, every time a canonical RFC 3339 string in UTC or None.
"""

from __future__ import annotations

from typing import Any

from engine.observe.retries import MAX_ATTEMPTS
from engine.observe.timeline.building import Building, causal_order, letter_key
from engine.observe.timeline.fields import (
    MAX_DEAD_LETTERS,
    MAX_DEAD_REASON,
    MAX_EVENTS,
    MAX_ID,
    MAX_NAME,
    MAX_SERVICE,
    MAX_TOPIC,
    MAX_TYPE,
    TRACE_ID,
    bounded_text,
    coordinates,
    decoded_key,
    failure_details,
    finite_seconds,
)
from engine.observe.timeline.times import canonical_rfc3339
from engine.wire.deadletter import DLQ_SUFFIX
from engine.wire.notices import MAX_ERROR


class Restoring(Building):
    """``restore``: the codec a table's stored timelines are read back through."""

    def restore(self, stored: Any, key: Any = None, now: float | None = None) -> dict[str, Any]:
        """A timeline every function here can use, from whatever a table holds under ``key``.

        A timeline this module built comes back equal; one an older tracker stored (a time that is
        a number, a string of any length, a field of another type) comes back with each field
        normalised or dropped; anything that is not a timeline comes back as a new, empty one."""
        fields = stored if isinstance(stored, dict) else {}
        saga_id = bounded_text(fields.get("saga_id"), MAX_ID) or bounded_text(decoded_key(key), MAX_ID) or ""
        restored = self.new(saga_id)
        if not fields:
            return restored
        events: list[dict[str, Any]] = []
        ids: set[str] = set()
        raw = fields.get("events")
        for candidate in raw if isinstance(raw, list) else ():
            event = _restored_event(candidate)
            if event is not None and event["id"] not in ids and len(events) < MAX_EVENTS:
                ids.add(event["id"])
                events.append(event)
        outcome = fields.get("outcome")
        notices = fields.get("retries")  # absent from a timeline stored before notices were kept
        notices = notices if isinstance(notices, dict) else {}
        retries = {}
        for participant in self.participants:  # one notice each at most, whatever is stored
            notice = _restored_notice(notices.get(participant), participant)
            if notice is not None:
                retries[participant] = notice
        letters = fields.get("dead_letters")  # absent from a timeline stored before they were kept
        kept = [d for d in map(_restored_dead_letter, letters if isinstance(letters, list) else ()) if d is not None]
        trace = fields.get("trace_id")
        restored.update(
            **{field: bounded_text(fields.get(field), MAX_NAME) for field in self.summary_fields},
            started_at=canonical_rfc3339(fields.get("started_at")),
            ended_at=canonical_rfc3339(fields.get("ended_at")),
            outcome=outcome if isinstance(outcome, str) and outcome in self.outcomes else None,
            events=causal_order(events),
            retries=retries,
            dead_letters=_unique_letters(kept)[:MAX_DEAD_LETTERS],
            trace_id=trace if isinstance(trace, str) and TRACE_ID.fullmatch(trace) else None,
        )
        if now is not None:  # what the tracker saw is never later than now: anyone can write its changelog
            for seen in (*restored["events"], *restored["retries"].values(), *restored["dead_letters"]):
                seen["seen_at"] = min(seen["seen_at"], now)
        return restored


def _restored_event(stored: Any) -> dict[str, Any] | None:
    if not isinstance(stored, dict):
        return None
    event_id, type_ = bounded_text(stored.get("id"), MAX_ID), bounded_text(stored.get("type"), MAX_TYPE)
    if not event_id or not type_:
        return None
    event: dict[str, Any] = {
        "id": event_id,
        "type": type_,
        "service": bounded_text(stored.get("service"), MAX_SERVICE) or "",
        "topic": bounded_text(stored.get("topic"), MAX_TOPIC) or "",
        "time": canonical_rfc3339(stored.get("time")),
        "causation": bounded_text(stored.get("causation"), MAX_ID),
    }
    event.update(coordinates(stored.get("partition"), stored.get("offset")))
    event.update(failure_details(stored))
    event["seen_at"] = finite_seconds(stored.get("seen_at"))
    return event


def _unique_letters(letters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each dead letter once (the first copy), in the order given."""
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for letter in letters:
        unique.setdefault(letter_key(letter), letter)
    return list(unique.values())


def _restored_dead_letter(stored: Any) -> dict[str, Any] | None:
    if not isinstance(stored, dict):
        return None
    where = coordinates(stored.get("partition"), stored.get("offset"))
    topic = bounded_text(stored.get("topic"), MAX_TOPIC)
    if not where or not topic:
        return None
    return {
        "topic": topic,
        "source": bounded_text(stored.get("source"), MAX_TOPIC) or topic.removesuffix(DLQ_SUFFIX),
        **where,
        "reason": bounded_text(stored.get("reason"), MAX_DEAD_REASON) or "(no reason recorded)",
        "consumer": bounded_text(stored.get("consumer"), MAX_SERVICE) or "",
        "time": canonical_rfc3339(stored.get("time")),
        "seen_at": finite_seconds(stored.get("seen_at")),
    }


def _count(value: Any, least: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_ATTEMPTS:
        return None
    return value


def _restored_notice(stored: Any, participant: str) -> dict[str, Any] | None:
    """A stored notice, every field checked, or None when it is not one."""
    if not isinstance(stored, dict):
        return None
    notice: dict[str, Any] = {
        "id": bounded_text(stored.get("id"), MAX_ID),
        "causation": bounded_text(stored.get("causation"), MAX_ID),
        "participant": participant,
        "event_type": bounded_text(stored.get("event_type"), MAX_TYPE),
        "attempt": _count(stored.get("attempt"), 1),
        "maximum_attempts": _count(stored.get("maximum_attempts"), 0),
        "next_attempt_at": canonical_rfc3339(stored.get("next_attempt_at")),
        "error": bounded_text(stored.get("error"), MAX_ERROR) or "",
        "time": canonical_rfc3339(stored.get("time")),
        "seen_at": finite_seconds(stored.get("seen_at")),
    }
    required = ("id", "causation", "event_type", "attempt", "next_attempt_at")
    if not all(notice[field] for field in required) or notice["maximum_attempts"] is None:
        return None
    return notice
