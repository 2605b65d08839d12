"""Where a saga stands, from its timeline: its state (an outcome's, ``needs_operator``,
``refused``, ``retrying``, ``stuck``, ``compensating`` or ``running``), what it waits on, and when
the tracker may forget it.

A retry notice (engine.wire.notices, on the saga's retries topic) is no event of the saga: it
says a participant failed to apply a record (its ``causation``) ``attempt`` times and tries
again at ``next_attempt_at``. A saga with no outcome whose latest notice is about the event it
waits on (no later event has come from that participant) is ``retrying``, until ``stuck_after``
past the next attempt the notice announces; a next attempt is believed no later than a retry
policy's longest wait (``MAX_WAIT``) after the tracker read it.
"""

from __future__ import annotations

from typing import Any

from engine.observe.retries import MAX_WAIT
from engine.observe.timeline.shape import COMPENSATION_FAILED, NEEDS_OPERATOR, REFUSED, SagaShape
from engine.observe.timeline.times import instant
from engine.versions import NEWER_VERSION

# A compensator's dead letter with one of these reasons stops the unwinding (see States.stops_unwinding).
STOPPING_UNWINDING = (f"{NEWER_VERSION}:", "internal_error:", "rebuild_conflict:")

WAITING_STATES = ("running", "retrying", "compensating", "stuck")  # the states of a saga that waits on a participant


def last_progress(timeline: dict[str, Any]) -> float:
    return max((float(e["seen_at"]) for e in timeline["events"]), default=0.0)


def last_seen(timeline: dict[str, Any]) -> float:
    """When the tracker last read anything of the saga (an event, a retry notice, a dead letter), on
    its own clock: what retention counts from, whatever times the records claim."""
    seen = [float(e["seen_at"]) for e in timeline["events"]]
    seen += [float(n["seen_at"]) for n in timeline["retries"].values()]
    seen += [float(d["seen_at"]) for d in timeline["dead_letters"]]
    return max(seen, default=0.0)


def next_attempt(notice: dict[str, Any]) -> float:
    """When a notice's next attempt is due, as far as it can be believed: the time it announces,
    but no later than ``MAX_WAIT`` after the tracker read it. From the notice's own fields only,
    so a timeline restored from the table is in the same state. A record held for a newer version
    (engine.versions) is said once and looked at again, in silence, until an upgraded instance takes
    it or its hold ends (a day by default): its saga waits, with that reason, ``MAX_WAIT`` from then."""
    if str(notice.get("error", "")).startswith(f"{NEWER_VERSION}:"):
        return float(notice["seen_at"]) + MAX_WAIT
    return min(instant(notice["next_attempt_at"]), float(notice["seen_at"]) + MAX_WAIT)


class States(SagaShape):
    """The state of a saga, what it waits on, and when its retention starts."""

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

    def stops_unwinding(self, dead_letter: dict[str, Any]) -> bool:
        """A dead letter of a compensation not done: one that failed on its data (its reason starts
        ``compensation_failed``); or one a compensator dead-lettered because it held it for a newer
        version until its hold ended (``newer_version``: engine.versions), because its own code raised
        (``internal_error``) or because a rebuild of its database found a decision it could not make
        again (``rebuild_conflict``)."""
        reason = dead_letter["reason"]
        by_compensator = dead_letter.get("consumer") in self.compensators
        return reason.startswith(COMPENSATION_FAILED) or (by_compensator and reason.startswith(STOPPING_UNWINDING))

    def needs_operator(self, timeline: dict[str, Any]) -> bool:
        """A saga with no outcome whose compensation a participant dead-lettered (``stops_unwinding``):
        the unwinding stopped there, and only an operator (a fix or an upgrade, then ``pokesaga dlq
        replay``) moves it on. Only a saga the tracker saw start: such a dead letter alone (anyone
        can write one) is a fragment, forgotten like any other."""
        return (
            timeline["outcome"] is None
            and any(self.stops_unwinding(d) for d in timeline["dead_letters"])
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
