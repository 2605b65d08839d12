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

The parts, each a module here: ``fields`` (bounds, ``NotAnEvent``, total field helpers), ``times``
(RFC 3339 text and epoch seconds), ``shape`` (the saga as a timeline sees it), ``records``
(``parse``, ``parse_dead_letter``), ``building`` (``new``, ``add``, causal order), ``restore`` (the
changelog's codec), ``states`` (``state``, ``settled_at``, ``retrying``) and ``view`` (``view``,
``bars``, and ``Timelines``, which is all of them).
"""

from engine.observe.retries import MAX_ATTEMPTS, MAX_WAIT
from engine.observe.timeline.building import causal_order
from engine.observe.timeline.fields import (
    CONTROL,
    MAX_DEAD_LETTERS,
    MAX_DEAD_REASON,
    MAX_DETAIL,
    MAX_EVENTS,
    MAX_FAILURE_REASON,
    MAX_ID,
    MAX_NAME,
    MAX_OFFSET,
    MAX_SERVICE,
    MAX_STEP,
    MAX_TOPIC,
    MAX_TYPE,
    MAX_UNDONE,
    REASONS,
    NotAnEvent,
    bad_saga_id,
    trace_id,
)
from engine.observe.timeline.shape import COMPENSATION_FAILED, NEEDS_OPERATOR, REFUSED
from engine.observe.timeline.states import WAITING_STATES, last_progress, last_seen, next_attempt
from engine.observe.timeline.times import canonical_rfc3339, instant
from engine.observe.timeline.view import Timelines, duration_ms, newest_first
from engine.wire.notices import MAX_ERROR
from engine.wire.notices import TYPE as NOTICE

__all__ = [
    "COMPENSATION_FAILED",
    "CONTROL",
    "MAX_ATTEMPTS",
    "MAX_DEAD_LETTERS",
    "MAX_DEAD_REASON",
    "MAX_DETAIL",
    "MAX_ERROR",
    "MAX_EVENTS",
    "MAX_ID",
    "MAX_NAME",
    "MAX_OFFSET",
    "MAX_FAILURE_REASON",
    "MAX_SERVICE",
    "MAX_STEP",
    "MAX_TOPIC",
    "MAX_TYPE",
    "MAX_UNDONE",
    "MAX_WAIT",
    "NEEDS_OPERATOR",
    "NOTICE",
    "REASONS",
    "REFUSED",
    "WAITING_STATES",
    "NotAnEvent",
    "Timelines",
    "bad_saga_id",
    "causal_order",
    "duration_ms",
    "instant",
    "last_progress",
    "last_seen",
    "newest_first",
    "next_attempt",
    "canonical_rfc3339",
    "trace_id",
]
