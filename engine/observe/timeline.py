"""A saga's timeline, from the events on its topics: pure functions, no I/O.

A tracker and a command-line trace build timelines with the same code: ``Timelines(saga, …)``
binds it to a saga's declaration (its event types, outcomes, compensating events, who handles
what) and to the fields a saga shows from its start event (``summary``). A timeline is a plain
JSON document, so a table stores it as it is:

    {"saga_id", <summary fields>, "started_at", "ended_at", "outcome", "events": [...],
     "retries": {participant: notice}}

each event ``{"id", "type", "service", "topic", "time", "causation", "seen_at", ...details}``.
Events are kept once per id (a re-published event is the same event) and in causal order:
each after the event that caused it, whatever order the topics delivered them in.

A retry notice (engine.wire.notices, on the saga's retries topic) is no event of the saga: it
says a participant failed to apply a record (its ``causation``) ``attempt`` times and tries
again at ``next_attempt_at``. A timeline keeps the latest notice of each participant, ``{"id",
"causation", "participant", "event_type", "attempt", "maximum_attempts", "next_attempt_at",
"error", "time", "seen_at"}``; a saga with no outcome whose latest notice is about the event it
waits on (no later event has come from that participant) is ``retrying``, until ``stuck_after``
past the next attempt the notice announces. Any client can write a notice, so what it claims is
bounded by what a participant could say: the latest notice is the one announcing the later
attempt at a record (then the one read later), never the one claiming the later time, and a next
attempt is believed no later than a retry policy's longest wait (``MAX_WAIT``) after the tracker
read it.

Any client can write anything to a saga topic, so both ends are total. ``parse`` places a
record only if the services would take it (the same envelope and event rules, the event's own
topic, a record the client could read); anything else is ``NotAnEvent`` with a reason from
``REASONS``, which the readers skip and count. ``restore`` turns whatever a table holds (a
timeline written by an older tracker, or anything else) into a timeline every function here
can use: every string bounded, every time a canonical RFC 3339 string in UTC or None.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from engine.broker.unreadable import unreadable_reason
from engine.events import FailureEvent
from engine.observe.retries import MAX_ATTEMPTS, MAX_WAIT, notice_data
from engine.ops.deadletters import DLQ_HEADER_PREFIX, DLQ_SUFFIX
from engine.saga import Saga
from engine.wire.codec import BadRecord, decode_envelope, decode_event
from engine.wire.envelope import Envelope
from engine.wire.notices import MAX_ERROR
from engine.wire.notices import TYPE as NOTICE
from engine.wire.notices import rfc3339 as notice_time

# Why a record was not placed: the ``reason`` label of pokesaga_tracker_records_skipped_total.
REASONS = (
    "unreadable",  # the client could not read it as written (a header key that is not UTF-8)
    "empty",  # no value
    "not_json",
    "not_cloudevent",  # JSON, but not an envelope the services take
    "unknown_type",
    "wrong_topic",  # a saga event on another event's topic
    "invalid_data",  # a known event whose data the services refuse
    "too_many_events",  # more events for one saga than any saga has
    "error",  # a bug of the tracker's own (logged)
)

# The states a saga with no outcome is in when a dead letter decides it (see ``Timelines.state``).
REFUSED = "refused"
NEEDS_OPERATOR = "needs_operator"
COMPENSATION_FAILED = "compensation_failed"  # how a dead-lettered compensation's reason starts

# Bounds of what a timeline stores (the envelope's own bounds, or more).
MAX_EVENTS = 100  # a saga has at most 9; more is someone writing to the topics
MAX_ID = 200
MAX_TYPE = 100
MAX_NAME = 64
MAX_SERVICE = 200
MAX_TOPIC = 249  # Kafka's own limit
MAX_REASON = 64
MAX_STEP = 20
MAX_DETAIL = 2000
MAX_UNDONE = 8
MAX_DEAD_LETTERS = 20  # a saga's own records refused at most once per participant; more is a flood
MAX_DEAD_REASON = 1000  # the dead-letter header's own bound
MAX_OFFSET = 2**63 - 1
_TRACE_ID = re.compile(r"(?!0{32})[0-9a-f]{32}", re.ASCII)
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-((?!0{32})[0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}", re.ASCII)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_DETAILS = {"reason": MAX_REASON, "failed_step": MAX_STEP, "detail": MAX_DETAIL}
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))?", re.ASCII
)


class NotAnEvent(ValueError):
    """A record that is not an event of the saga: the readers skip it (and count it by ``reason``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason if reason in REASONS else "not_cloudevent"


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


def newest_first(views: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Timelines (or their views) by start time, newest first; those with no start time last."""
    return sorted(views, key=lambda v: (instant(v.get("started_at")), str(v.get("saga_id"))), reverse=True)


def last_progress(timeline: dict[str, Any]) -> float:
    return max((float(e["seen_at"]) for e in timeline["events"]), default=0.0)


def last_seen(timeline: dict[str, Any]) -> float:
    """When the tracker last read anything of the saga (an event, a retry notice, a dead letter), on
    its own clock: what retention counts from, whatever times the records claim."""
    seen = [float(e["seen_at"]) for e in timeline["events"]]
    seen += [float(n["seen_at"]) for n in timeline["retries"].values()]
    seen += [float(d["seen_at"]) for d in timeline["dead_letters"]]
    return max(seen, default=0.0)


def duration_ms(timeline: dict[str, Any]) -> float | None:
    """End to end, from the start event's time to the outcome's."""
    start, end = instant(timeline.get("started_at")), instant(timeline.get("ended_at"))
    if math.isinf(start) or math.isinf(end):
        return None
    return round((end - start) * 1000, 1)


class Timelines:
    """The timeline functions of one saga: its declaration, the state each outcome ends in, and
    the fields shown from its start event (``summary(data) -> {field: text or None}``)."""

    def __init__(
        self,
        saga: Saga,
        outcome_states: Mapping[str, str],
        summary: Callable[[dict[str, Any]], dict[str, str | None]],
        summary_fields: tuple[str, ...],
    ) -> None:
        if set(outcome_states) != saga.outcome_types:
            raise ValueError(f"outcome_states must name every outcome of {saga.name}: {sorted(saga.outcome_types)}")
        self.types = saga.types
        self.outcomes = dict(outcome_states)  # outcome event → the state it ends in
        self.compensating = saga.compensating_types
        self.states = ("running", "retrying", "compensating", "stuck", REFUSED, NEEDS_OPERATOR, *self.outcomes.values())
        self.next = saga.handled_by  # who acts next after each event: what a saga stopped there waits on
        self.participants = tuple(saga.participants)  # a timeline keeps a notice of each, at most
        self.compensators = frozenset(c.name for c in saga.compensations)
        self.failed_outcomes = frozenset(n for n in saga.outcome_types if issubclass(saga.types[n], FailureEvent))
        self.consumed = frozenset(saga.consumed)  # whose dead-letter topics hold the saga's dead letters
        self.retries_topic = saga.retries_topic
        self.source_prefix = f"{saga.name}/"
        self.start = saga.start.__name__
        self.start_topic = saga.start.topic
        self.summary = summary
        self.summary_fields = summary_fields

    def parse(
        self, value: bytes | None, topic: str, headers: Any = None, partition: Any = None, offset: Any = None
    ) -> dict[str, Any]:
        """The timeline entry of one record, or NotAnEvent; ``headers`` as the Kafka client gives them,
        ``partition`` and ``offset`` where the record is (kept, to read it again from the broker)."""
        unreadable = unreadable_reason(_pairs(headers))
        if unreadable is not None:
            raise NotAnEvent("unreadable", unreadable)
        if not value:
            raise NotAnEvent("empty", "the record has no value")
        try:
            envelope = decode_envelope(value)
            if bad_saga_id(envelope.sagaid) is not None:  # one no request can name, nor the changelog hold
                raise NotAnEvent("invalid_data", f"saga id: {bad_saga_id(envelope.sagaid)}")
            if envelope.type == NOTICE:
                return self._notice(envelope, topic)
            known = self.types.get(envelope.type)
            if known is None:
                raise NotAnEvent("unknown_type", f"{envelope.type[:MAX_TYPE]!r} is no event of the saga")
            if known.topic != topic:
                raise NotAnEvent("wrong_topic", f"{envelope.type} belongs on {known.topic}")
            decode_event(envelope, self.types)
        except BadRecord as bad:
            raise NotAnEvent(bad.kind, bad.reason) from None
        data = envelope.data
        entry: dict[str, Any] = {
            "id": _text(envelope.id, MAX_ID),
            "type": envelope.type,
            "saga_id": _text(envelope.sagaid, MAX_ID),
            "service": _text(envelope.source.removeprefix(self.source_prefix), MAX_SERVICE) or "",
            "topic": _text(topic, MAX_TOPIC) or "",
            "time": rfc3339(envelope.time),
            "causation": _text(envelope.causationid, MAX_ID),
        }
        entry.update(_coordinates(partition, offset))
        trace = trace_id(headers)
        if trace is not None:
            entry["trace_id"] = trace
        entry.update(_details(data))
        if envelope.type == self.start:
            shown = self.summary(data)
            entry.update({field: _text(shown.get(field), MAX_NAME) for field in self.summary_fields})
        return entry

    def _notice(self, envelope: Envelope, topic: str) -> dict[str, Any]:
        """The entry of a retry notice: only one a participant of the saga could have written,
        about an event it handles, on the saga's retries topic."""
        if topic != self.retries_topic:
            raise NotAnEvent("wrong_topic", f"{NOTICE} belongs on {self.retries_topic}")
        data = notice_data(envelope)
        if self.next.get(data.event_type) != data.participant:
            raise NotAnEvent(
                "invalid_data", f"{NOTICE}: {data.participant[:MAX_NAME]!r} handles no {data.event_type[:MAX_NAME]!r}"
            )
        if envelope.causationid is None:
            raise NotAnEvent("invalid_data", f"{NOTICE}: no causationid (the record being retried)")
        if data.maximum_attempts and data.attempt > data.maximum_attempts:
            raise NotAnEvent("invalid_data", f"{NOTICE}: attempt {data.attempt} of {data.maximum_attempts}")
        next_attempt_at = rfc3339(data.next_attempt_at)
        if next_attempt_at is None:
            raise NotAnEvent("invalid_data", f"{NOTICE}: next_attempt_at is not an RFC 3339 date-time")
        return {
            "id": _text(envelope.id, MAX_ID),
            "type": NOTICE,
            "saga_id": _text(envelope.sagaid, MAX_ID),
            "topic": _text(topic, MAX_TOPIC) or "",
            "time": rfc3339(envelope.time),
            "causation": _text(envelope.causationid, MAX_ID),
            "participant": data.participant,
            "event_type": data.event_type,
            "attempt": data.attempt,
            "maximum_attempts": data.maximum_attempts,
            "next_attempt_at": next_attempt_at,
            "error": _text(data.error, MAX_ERROR) or "",
        }

    def parse_dead_letter(
        self, key: bytes | None, topic: str, headers: Any, partition: Any, offset: Any, timestamp_ms: Any
    ) -> dict[str, Any]:
        """The entry of a record on a dead-letter topic of the saga: where it is, why it is there,
        and the saga it is about (its key); NotAnEvent when its key is no saga id."""
        source = topic.removesuffix(DLQ_SUFFIX)
        if not topic.endswith(DLQ_SUFFIX) or source not in self.consumed:
            raise NotAnEvent("wrong_topic", f"{topic[:MAX_TOPIC]!r} is no dead-letter topic of the saga")
        pairs = _pairs(headers)
        if unreadable_reason(pairs) is not None or key is None:
            raise NotAnEvent("unreadable", "a dead letter with no key, or headers that are not UTF-8")
        try:
            saga_id = key.decode("utf-8")
        except UnicodeDecodeError:
            raise NotAnEvent("unreadable", "a dead letter whose key is not UTF-8") from None
        if bad_saga_id(saga_id) is not None:
            raise NotAnEvent("invalid_data", "a dead letter whose key is no saga id")
        ours = {k: v for k, v in pairs if isinstance(k, str) and k.startswith(DLQ_HEADER_PREFIX)}

        def header(name: str, limit: int) -> str:
            value = ours.get(DLQ_HEADER_PREFIX + name)
            return CONTROL.sub(" ", value.decode("utf-8", "replace"))[:limit] if isinstance(value, bytes) else ""

        seconds = _seconds(timestamp_ms) / 1000
        return {
            "saga_id": saga_id,
            "topic": topic,
            "source": source,
            **_coordinates(partition, offset),
            "reason": header("reason", MAX_DEAD_REASON) or "(no reason recorded)",
            "consumer": header("consumer", MAX_SERVICE),
            "time": notice_time(seconds) if seconds else None,
        }

    def add_dead_letter(self, timeline: dict[str, Any], entry: dict[str, Any], seen_at: float) -> bool:
        """Add a dead letter (from ``parse_dead_letter``) to its saga's timeline: False when it is
        there already; kept up to ``MAX_DEAD_LETTERS`` (the first ones: what went wrong first)."""
        letters: list[dict[str, Any]] = timeline["dead_letters"]
        if any(_letter_key(d) == _letter_key(entry) for d in letters):
            return False
        if len(letters) >= MAX_DEAD_LETTERS:
            raise NotAnEvent("too_many_events", f"saga {timeline['saga_id']!r} has {MAX_DEAD_LETTERS} dead letters")
        letters.append({k: v for k, v in entry.items() if k != "saga_id"} | {"seen_at": _seconds(seen_at)})
        return True

    def bars(self, timeline: dict[str, Any], now: float | None = None) -> list[dict[str, Any]]:
        """What each participant did, as bars: one per event a participant published in answer to
        another, from the time of the event that reached it to the time of the one it published,
        in causal order (so compensations come after the failure, in the order they unwound).
        With ``now``, the participant a saga still waits on has an open bar (``end`` None) up to now."""
        events = timeline["events"]
        if not events:
            return []
        by_id = {e["id"]: e for e in events}
        origin = instant(events[0].get("time"))

        def bar(cause: dict[str, Any], answer: dict[str, Any] | None, end: float) -> dict[str, Any]:
            participant = self.next.get(cause["type"]) or (answer or {}).get("service") or ""
            start = instant(cause.get("time"))
            known = not (math.isinf(start) or math.isinf(end) or math.isinf(origin))
            return {
                "participant": participant,
                "kind": "compensation" if participant in self.compensators else "step",
                "consumed": cause["type"],
                "published": answer["type"] if answer else None,
                "from_event": cause["id"],
                "to_event": answer["id"] if answer else None,
                "start": cause.get("time"),
                "end": answer.get("time") if answer else None,
                "start_ms": round((start - origin) * 1000, 1) if known else None,
                "duration_ms": round(max(0.0, end - start) * 1000, 1) if known else None,
                "failed": answer is not None and answer["type"] in self.compensating
                and participant not in self.compensators,
            }  # fmt: skip

        found = [
            bar(by_id[e["causation"]], e, instant(e.get("time")))
            for e in events
            if e.get("causation") in by_id and e["causation"] != e["id"]
        ]
        waiting = self.waiting_on(timeline)
        if now is not None and waiting is not None:
            found.append(bar(events[-1], None, now) | {"participant": waiting})
        return found

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

    def restore(self, stored: Any, key: Any = None, now: float | None = None) -> dict[str, Any]:
        """A timeline every function here can use, from whatever a table holds under ``key``.

        A timeline this module built comes back equal; one an older tracker stored (a time that is
        a number, a string of any length, a field of another type) comes back with each field
        normalised or dropped; anything that is not a timeline comes back as a new, empty one."""
        fields = stored if isinstance(stored, dict) else {}
        saga_id = _text(fields.get("saga_id"), MAX_ID) or _text(_decoded(key), MAX_ID) or ""
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
            **{field: _text(fields.get(field), MAX_NAME) for field in self.summary_fields},
            started_at=rfc3339(fields.get("started_at")),
            ended_at=rfc3339(fields.get("ended_at")),
            outcome=outcome if isinstance(outcome, str) and outcome in self.outcomes else None,
            events=causal_order(events),
            retries=retries,
            dead_letters=_unique_letters(kept)[:MAX_DEAD_LETTERS],
            trace_id=trace if isinstance(trace, str) and _TRACE_ID.fullmatch(trace) else None,
        )
        if now is not None:  # what the tracker saw is never later than now: anyone can write its changelog
            for seen in (*restored["events"], *restored["retries"].values(), *restored["dead_letters"]):
                seen["seen_at"] = min(seen["seen_at"], now)
        return restored

    def add(self, timeline: dict[str, Any], entry: dict[str, Any], seen_at: float) -> bool:
        """Add ``entry`` (from ``parse``) to ``timeline`` (from ``new`` or ``restore``) in causal order.

        False when that event was there already; NotAnEvent when the timeline is full. A retry
        notice is kept if it is its participant's latest (see ``_supersedes``); False if not."""
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
        events.append(event | {"seen_at": _seconds(seen_at)})
        timeline["events"] = causal_order(events)
        first = timeline["events"][0]
        timeline["started_at"] = first.get("time")
        if entry["type"] in self.outcomes and timeline["outcome"] is None:
            timeline["outcome"] = entry["type"]
            timeline["ended_at"] = entry.get("time")
        return True

    def _add_notice(self, timeline: dict[str, Any], entry: dict[str, Any], seen_at: float) -> bool:
        notice = {field: entry[field] for field in _NOTICE_FIELDS} | {"seen_at": _seconds(seen_at)}
        retries: dict[str, dict[str, Any]] = timeline["retries"]
        held = retries.get(notice["participant"])
        if held is not None and (held["id"] == notice["id"] or not _supersedes(notice, held, timeline["events"])):
            return False
        retries[notice["participant"]] = notice
        return True

    def retrying(self, timeline: dict[str, Any]) -> dict[str, Any] | None:
        """The latest retry notice about the event the saga waits on, if there is one: the
        participant that should act next says it failed and will try again; None once it has
        published its next event (or when the saga has an outcome)."""
        if timeline["outcome"] or not timeline["events"]:
            return None
        last = timeline["events"][-1]
        participant = self.next.get(last["type"])
        notice = timeline["retries"].get(participant) if participant else None
        return notice if notice is not None and notice["causation"] == last["id"] else None

    def needs_operator(self, timeline: dict[str, Any]) -> bool:
        """A saga with no outcome whose compensation a participant dead-lettered because it failed
        on its data (a dead letter whose reason starts ``compensation_failed``): the unwinding
        stopped there, and only an operator (a fix, then ``pokesaga dlq replay``) moves it on. Only
        a saga the tracker saw start: such a dead letter alone (anyone can write one) is a fragment,
        forgotten like any other."""
        return (
            timeline["outcome"] is None
            and any(d["reason"].startswith(COMPENSATION_FAILED) for d in timeline["dead_letters"])
            and any(e["type"] == self.start for e in timeline["events"])
        )

    def refused(self, timeline: dict[str, Any]) -> bool:
        """A saga with no outcome whose start the services refused: a dead letter from the start
        event's topic, and no event past the start (nothing will come of it)."""
        return (
            timeline["outcome"] is None
            and any(d["source"] == self.start_topic for d in timeline["dead_letters"])
            and all(e["type"] == self.start for e in timeline["events"])
        )

    def state(self, timeline: dict[str, Any], now: float, stuck_after: float) -> str:
        """The outcome's state once there is one; else ``needs_operator`` when a compensation was
        dead-lettered, ``refused`` when the start was (see the methods of those names); else
        ``retrying`` while the participant a saga waits on says it will try again, until
        ``stuck_after`` past the attempt it announced (a participant that never came back is stuck),
        or past ``MAX_WAIT`` after the notice was read if it announced a later one (no policy waits
        longer: a notice saying so was made up)."""
        if timeline["outcome"]:
            return self.outcomes[timeline["outcome"]]
        if self.needs_operator(timeline):
            return NEEDS_OPERATOR
        if self.refused(timeline):
            return REFUSED
        notice = self.retrying(timeline)
        if notice is not None and now - next_attempt(notice) <= stuck_after:
            return "retrying"
        if timeline["events"] and now - last_progress(timeline) > stuck_after:
            return "stuck"
        if any(e["type"] in self.compensating for e in timeline["events"]):
            return "compensating"
        return "running"

    def settled_at(self, timeline: dict[str, Any]) -> float | None:
        """When a saga's retention starts (epoch seconds, on the tracker's own clock), or None while
        it is to be kept.

        Retention counts from when the tracker last saw anything of the saga (``last_seen``), never
        from a time a record claims: any client writes any ``time`` (year 9999, or 1970). It starts
        for a finished saga (an outcome), a refused start, a fragment (events with no start event:
        what a re-publication of a forgotten saga's events leaves) and retry notices or dead
        letters with no event at all. A saga still running, or one that needs an operator (a
        compensation dead-lettered: kept until it has an outcome), is kept."""
        if timeline["outcome"] or self.refused(timeline):
            return last_seen(timeline)
        if self.needs_operator(timeline):
            return None
        events = timeline["events"]
        if not events and (timeline["retries"] or timeline["dead_letters"]):
            return last_seen(timeline)
        if events and all(e["type"] != self.start for e in events):
            return last_seen(timeline)
        return None

    def expired(self, timeline: dict[str, Any], now: float, retention_seconds: float) -> bool:
        """A saga settled longer than ``retention_seconds`` ago: the tracker forgets it."""
        settled = self.settled_at(timeline)
        return settled is not None and now - settled > retention_seconds

    def waiting_on(self, timeline: dict[str, Any]) -> str | None:
        """The participant that should act next, for a saga with no outcome yet."""
        if timeline["outcome"] or not timeline["events"]:
            return None
        return self.next.get(timeline["events"][-1]["type"])

    def view(
        self, timeline: Any, now: float, stuck_after: float, key: Any = None, restored: bool = False
    ) -> dict[str, Any]:
        """The JSON a user reads: the timeline with its state, what it waits on and its duration.

        Total: ``timeline`` is restored first, whatever it holds, unless the caller says it comes
        from ``restore`` (or ``new`` and ``add``) already."""
        if not restored:
            timeline = self.restore(timeline, key)
        current = self.state(timeline, now, stuck_after)
        waiting = ("running", "retrying", "compensating", "stuck")
        return timeline | {
            "bars": self.bars(timeline, now if current in waiting else None),
            "state": current,
            "waiting_on": self.waiting_on(timeline) if current in waiting else None,
            "retrying": self.retrying(timeline) if current == "retrying" else None,
            "duration_ms": duration_ms(timeline),
            "last_progress": last_progress(timeline),
        }


# -- normalising ------------------------------------------------------------------------


def bad_saga_id(saga_id: str) -> str | None:
    """Why no saga can have this id (a request's, a dead letter's key), or None."""
    if not 1 <= len(saga_id) <= MAX_ID:
        return f"a saga id has 1 to {MAX_ID} characters, got {len(saga_id)}"
    if CONTROL.search(saga_id):
        return f"a saga id has no control characters, got {saga_id[:60]!r}" + ("…" if len(saga_id) > 60 else "")
    return None


def rfc3339(value: Any) -> str | None:
    """``value`` (a datetime, or a date-time string) as an RFC 3339 string in UTC, else None.

    A time with no offset is taken as UTC. The canonical form is pydantic's own, so an event's
    time reads as the service wrote it: ``2026-11-23T04:39:57.267869Z``."""
    if isinstance(value, str):
        value = _parsed_time(value)
    if not isinstance(value, datetime):
        return None
    try:
        utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except (OverflowError, ValueError):  # e.g. year 1 at +01:00
        return None
    return utc.isoformat().replace("+00:00", "Z")


def instant(text: Any) -> float:
    """Seconds since the epoch of an RFC 3339 string; -inf when there is none (sorted first)."""
    parsed = _parsed_time(text) if isinstance(text, str) else None
    if parsed is None:
        return -math.inf
    try:
        return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()
    except (OverflowError, ValueError):
        return -math.inf


def _parsed_time(text: str) -> datetime | None:
    match = _TIME.fullmatch(text) if len(text) <= 64 else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        zone = None
        if zulu:
            zone = UTC
        elif sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            zone = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, zone)
    except (ValueError, OverflowError):  # a 30th of February, a 60th second, an offset of 24 hours
        return None


def _text(value: Any, limit: int) -> str | None:
    """A string cut to ``limit`` characters, without NUL; None for anything else."""
    if not isinstance(value, str):
        return None
    return value[:limit].replace("\x00", "")


def _decoded(key: Any) -> Any:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0


def _details(fields: dict[str, Any]) -> dict[str, Any]:
    """A failure's reason, failed step, detail and undone steps, where present and of their type."""
    found: dict[str, Any] = {}
    for name, limit in _DETAILS.items():
        text = _text(fields.get(name), limit)
        if text is not None:
            found[name] = text
    undone = fields.get("undone")
    if isinstance(undone, list | tuple):
        found["undone"] = [s[:MAX_STEP] for s in undone[:MAX_UNDONE] if isinstance(s, str) and "\x00" not in s]
    return found


def _restored_event(stored: Any) -> dict[str, Any] | None:
    if not isinstance(stored, dict):
        return None
    event_id, type_ = _text(stored.get("id"), MAX_ID), _text(stored.get("type"), MAX_TYPE)
    if not event_id or not type_:
        return None
    event: dict[str, Any] = {
        "id": event_id,
        "type": type_,
        "service": _text(stored.get("service"), MAX_SERVICE) or "",
        "topic": _text(stored.get("topic"), MAX_TOPIC) or "",
        "time": rfc3339(stored.get("time")),
        "causation": _text(stored.get("causation"), MAX_ID),
    }
    event.update(_coordinates(stored.get("partition"), stored.get("offset")))
    event.update(_details(stored))
    event["seen_at"] = _seconds(stored.get("seen_at"))
    return event


def _coordinates(partition: Any, offset: Any) -> dict[str, int]:
    """``partition`` and ``offset``, where both are whole numbers a broker can give; else nothing."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (partition, offset)):
        return {}
    if not (0 <= partition < 2**31 and 0 <= offset <= MAX_OFFSET):
        return {}
    return {"partition": partition, "offset": offset}


def trace_id(headers: Any) -> str | None:
    """The W3C trace id in a record's ``traceparent`` header, or None (absent, or not one)."""
    for key, value in _pairs(headers):
        if key == "traceparent" and isinstance(value, bytes):
            match = _TRACEPARENT.fullmatch(value.strip())
            return match.group(1).decode() if match else None
    return None


def _letter_key(letter: dict[str, Any]) -> tuple[Any, ...]:
    return (letter.get("topic"), letter.get("partition"), letter.get("offset"))


def _unique_letters(letters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each dead letter once (the first copy), in the order given."""
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for letter in letters:
        unique.setdefault(_letter_key(letter), letter)
    return list(unique.values())


def _restored_dead_letter(stored: Any) -> dict[str, Any] | None:
    if not isinstance(stored, dict):
        return None
    where = _coordinates(stored.get("partition"), stored.get("offset"))
    topic = _text(stored.get("topic"), MAX_TOPIC)
    if not where or not topic:
        return None
    return {
        "topic": topic,
        "source": _text(stored.get("source"), MAX_TOPIC) or topic.removesuffix(DLQ_SUFFIX),
        **where,
        "reason": _text(stored.get("reason"), MAX_DEAD_REASON) or "(no reason recorded)",
        "consumer": _text(stored.get("consumer"), MAX_SERVICE) or "",
        "time": rfc3339(stored.get("time")),
        "seen_at": _seconds(stored.get("seen_at")),
    }


_NOTICE_FIELDS = (
    "id", "causation", "participant", "event_type", "attempt", "maximum_attempts", "next_attempt_at", "error", "time",
)  # fmt: skip


def _supersedes(notice: dict[str, Any], held: dict[str, Any], events: list[dict[str, Any]]) -> bool:
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


def next_attempt(notice: dict[str, Any]) -> float:
    """When a notice's next attempt is due, as far as it can be believed: the time it announces,
    but no later than ``MAX_WAIT`` after the tracker read it. From the notice's own fields only,
    so a timeline restored from the table is in the same state."""
    return min(instant(notice["next_attempt_at"]), float(notice["seen_at"]) + MAX_WAIT)


def _count(value: Any, least: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_ATTEMPTS:
        return None
    return value


def _restored_notice(stored: Any, participant: str) -> dict[str, Any] | None:
    """A stored notice, every field checked, or None when it is not one."""
    if not isinstance(stored, dict):
        return None
    notice: dict[str, Any] = {
        "id": _text(stored.get("id"), MAX_ID),
        "causation": _text(stored.get("causation"), MAX_ID),
        "participant": participant,
        "event_type": _text(stored.get("event_type"), MAX_TYPE),
        "attempt": _count(stored.get("attempt"), 1),
        "maximum_attempts": _count(stored.get("maximum_attempts"), 0),
        "next_attempt_at": rfc3339(stored.get("next_attempt_at")),
        "error": _text(stored.get("error"), MAX_ERROR) or "",
        "time": rfc3339(stored.get("time")),
        "seen_at": _seconds(stored.get("seen_at")),
    }
    required = ("id", "causation", "event_type", "attempt", "next_attempt_at")
    if not all(notice[field] for field in required) or notice["maximum_attempts"] is None:
        return None
    return notice


def _pairs(headers: Any) -> Any:
    """Headers as (key, value) pairs, whether the client gives a list of pairs or a mapping."""
    if isinstance(headers, Mapping):
        return list(headers.items())
    if not isinstance(headers, list | tuple):
        return ()
    return [h for h in headers if isinstance(h, tuple | list) and len(h) == 2]
