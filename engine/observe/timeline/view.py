"""What a user reads of a saga: its timeline with its state, what it waits on, its duration, and
bars of what each participant did; ``Timelines``, every part of a saga's timeline functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from engine.observe.timeline.records import Reading
from engine.observe.timeline.restore import Restoring
from engine.observe.timeline.states import WAITING_STATES, States, last_progress
from engine.observe.timeline.times import instant


def newest_first(views: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Timelines (or their views) by start time, newest first; those with no start time last."""
    return sorted(views, key=lambda v: (instant(v.get("started_at")), str(v.get("saga_id"))), reverse=True)


def duration_ms(timeline: dict[str, Any]) -> float | None:
    """End to end, from the start event's time to the outcome's."""
    start, end = instant(timeline.get("started_at")), instant(timeline.get("ended_at"))
    if math.isinf(start) or math.isinf(end):
        return None
    return round((end - start) * 1000, 1)


class Timelines(Reading, Restoring, States):
    """The timeline functions of one saga: its declaration, the state each outcome ends in, and
    the fields shown from its start event (``summary(data) -> {field: text or None}``)."""

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

    def view(
        self, timeline: Any, now: float, stuck_after: float, key: Any = None, restored: bool = False
    ) -> dict[str, Any]:
        """The JSON a user reads: the timeline with its state, what it waits on and its duration.

        Total: ``timeline`` is restored first, whatever it holds, unless the caller says it comes
        from ``restore`` (or ``new`` and ``add``) already."""
        if not restored:
            timeline = self.restore(timeline, key)
        current = self.state(timeline, now, stuck_after)
        return timeline | {
            "bars": self.bars(timeline, now if current in WAITING_STATES else None),
            "state": current,
            "waiting_on": self.waiting_on(timeline) if current in WAITING_STATES else None,
            "retrying": self.retrying(timeline) if current == "retrying" else None,
            "duration_ms": duration_ms(timeline),
            "last_progress": last_progress(timeline),
        }
