"""``pokesaga trace SAGA_ID``: one saga's timeline in the terminal, read from the topics.

The same timeline the tracker serves, built by the same code, but straight from the
topics: it needs no tracker running.
"""

from __future__ import annotations

import time
from typing import Any

from contracts import topics
from runtime import kafka
from tracker import timeline
from tracker.timeline import NotAnEvent


async def find(bootstrap: str, saga_id: str, stuck_after: float) -> dict[str, Any] | None:
    """The saga's timeline view, or None when no topic holds an event of it."""
    found = timeline.new(saga_id)
    key = saga_id.encode()
    async for record in kafka.scan_to_end(bootstrap, topics.ALL):
        if record.key != key:
            continue
        try:
            entry = timeline.parse(record.value, record.topic)
        except NotAnEvent:
            continue
        if entry["saga_id"] == saga_id:
            timeline.add(found, entry, record.timestamp / 1000)
    return timeline.view(found, time.time(), stuck_after) if found["events"] else None


def render(view: dict[str, Any]) -> str:
    took = f" in {view['duration_ms']:.1f} ms" if view["duration_ms"] is not None else ""
    waiting = f", waiting on {view['waiting_on']}" if view["waiting_on"] else ""
    lines = [
        f"saga {view['saga_id']}: {view['state']}{took}{waiting}",
        f"trainer {view['trainer'] or '?'}, {view['pokemon'] or '?'}",
        "",
    ]
    rows = [("time", "event", "service", "topic", "detail")]
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
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    return "\n".join(line.rstrip() for line in lines)
