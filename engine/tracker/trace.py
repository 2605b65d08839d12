"""A trace (``pokesaga trace SAGA_ID``): one saga's timeline in the terminal, read from the topics.
``find`` and ``render`` take the saga's declaration (and what it shows beyond it, a ``Display``),
as the tracker does: this module imports no saga.

The same timeline the tracker serves, built by the same code, but straight from the
topics: it needs no tracker running (the participants' retry notices included, so a saga
retrying at a participant reads ``retrying``, attempt n of m). A record keyed with the saga's id
that is no event of the saga (see ``Timelines.parse``) is skipped, and the count of them said in one
line on stderr.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from engine.broker import kafka
from engine.observe.retries import attempts_text
from engine.observe.timeline import NotAnEvent
from engine.saga import Saga
from engine.tracker.tracking import Display, Tracking
from engine.wire.text import printable

# Characters a terminal acts on rather than shows: C0 and C1 controls, DEL, bidirectional overrides.


async def find(
    saga: Saga, bootstrap: str, saga_id: str, stuck_after: float, display: Display | None = None
) -> dict[str, Any] | None:
    """The timeline view of saga ``saga_id`` of ``saga``, or None when no topic holds an event of it.

    Records of the saga that are no event are skipped; one line on stderr says how many."""
    timeline = Tracking(saga, display).timelines
    found = timeline.new(saga_id)
    key = saga_id.encode("utf-8", "surrogateescape")  # the id as typed, whatever the terminal's bytes
    skipped: Counter[str] = Counter()
    topics = list(saga.topics)
    if await kafka.topic_exists(bootstrap, saga.retries_topic):  # created by a newer service
        topics.append(saga.retries_topic)
    async for record in kafka.scan_to_end(bootstrap, topics):
        if record.key != key:
            continue
        try:
            entry = timeline.parse(record.value, record.topic, record.headers)
            if entry["saga_id"] == saga_id:
                timeline.add(found, entry, record.timestamp / 1000)
        except NotAnEvent as refused:
            skipped[refused.reason] += 1
    if skipped:
        count = sum(skipped.values())
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
        print(
            f"pokesaga trace: skipped {count} record{'s' * (count != 1)} keyed {printable(repr(saga_id))} "
            f"that {'are not pokesaga events' if count != 1 else 'is not a pokesaga event'} ({reasons})",
            file=sys.stderr,
        )
    return timeline.view(found, time.time(), stuck_after) if found["events"] else None


def render(saga: Saga, view: dict[str, Any], display: Display | None = None) -> str:
    """The view (of a saga of ``saga``) as a table; every value from an event is shown, never acted
    on by the terminal."""
    summary = Tracking(saga, display).line(view)
    took = f" in {view['duration_ms']:.1f} ms" if view["duration_ms"] is not None else ""
    waiting = f", waiting on {view['waiting_on']}" if view["waiting_on"] else ""
    lines = [f"saga {view['saga_id']}: {view['state']}{took}{waiting}", *([summary] if summary else []), ""]
    rows: list[tuple[str, ...]] = [("time", "event", "service", "topic", "detail")]
    for e in view["events"]:
        detail = " · ".join(
            part
            for part in (
                e.get("reason") and f"reason: {e['reason']}",
                e.get("failed_step") and f"step: {e['failed_step']}",
                e.get("undone") and f"undone: {', '.join(e['undone'])}",
            )
            if part
        )
        rows.append((str(e.get("time") or ""), e["type"], e["service"], e["topic"], detail))
    rows = [tuple(printable(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [printable(line) for line in lines]  # the head: the id, the summary from the start event
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    notice = view.get("retrying")
    if notice:
        said = attempts_text(notice["attempt"], notice["maximum_attempts"], notice["next_attempt_at"], notice["error"])
        lines += ["", printable(f"{notice['participant']} is retrying {notice['event_type']}: {said}")]
    return "\n".join(line.rstrip() for line in lines)
