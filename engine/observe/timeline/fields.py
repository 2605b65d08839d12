"""What a timeline may hold, and how a field is taken from what any client wrote: the bounds of
every field, why a record is no event of the saga (``NotAnEvent``, ``REASONS``), and total
helpers that return a bounded value of the right type, or nothing, whatever they are given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from engine.wire.deadletter import MAX_REASON as MAX_DEAD_REASON  # noqa: F401  (a dead letter's reason: re-exported)
from engine.wire.envelope import MAX_ID
from engine.wire.envelope import MAX_TYPE as MAX_TYPE  # re-exported: the timeline's bounds in one place

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

# Bounds of what a timeline stores (the envelope's own bounds, MAX_ID and MAX_TYPE, or more).
MAX_EVENTS = 100  # a saga has at most 9; more is someone writing to the topics
MAX_NAME = 64
MAX_SERVICE = 200
MAX_TOPIC = 249  # Kafka's own limit
MAX_FAILURE_REASON = 64  # a failure event's reason
MAX_STEP = 20
MAX_DETAIL = 2000
MAX_UNDONE = 8
MAX_DEAD_LETTERS = 20  # a saga's own records refused at most once per participant; more is a flood
MAX_OFFSET = 2**63 - 1
TRACE_ID = re.compile(r"(?!0{32})[0-9a-f]{32}", re.ASCII)
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-((?!0{32})[0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}", re.ASCII)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_DETAILS = {"reason": MAX_FAILURE_REASON, "failed_step": MAX_STEP, "detail": MAX_DETAIL}


class NotAnEvent(ValueError):
    """A record that is not an event of the saga: the readers skip it (and count it by ``reason``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason if reason in REASONS else "not_cloudevent"


def bad_saga_id(saga_id: str) -> str | None:
    """Why no saga can have this id (a request's, a dead letter's key), or None."""
    if not 1 <= len(saga_id) <= MAX_ID:
        return f"a saga id has 1 to {MAX_ID} characters, got {len(saga_id)}"
    if CONTROL.search(saga_id):
        return f"a saga id has no control characters, got {saga_id[:60]!r}" + ("…" if len(saga_id) > 60 else "")
    return None


def bounded_text(value: Any, limit: int) -> str | None:
    """A string cut to ``limit`` characters, without NUL; None for anything else."""
    if not isinstance(value, str):
        return None
    return value[:limit].replace("\x00", "")


def decoded_key(key: Any) -> Any:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key


def finite_seconds(value: Any) -> float:
    """A number of seconds (or milliseconds) a broker or the tracker could give: finite, not
    negative; 0.0 for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    try:
        found = float(value)
    except OverflowError:  # an integer too large for a float
        return 0.0
    return found if math.isfinite(found) and found >= 0 else 0.0


def failure_details(fields: dict[str, Any]) -> dict[str, Any]:
    """A failure's reason, failed step, detail and undone steps, where present and of their type."""
    found: dict[str, Any] = {}
    for name, limit in _DETAILS.items():
        text = bounded_text(fields.get(name), limit)
        if text is not None:
            found[name] = text
    undone = fields.get("undone")
    if isinstance(undone, list | tuple):
        found["undone"] = [s[:MAX_STEP] for s in undone[:MAX_UNDONE] if isinstance(s, str) and "\x00" not in s]
    return found


def coordinates(partition: Any, offset: Any) -> dict[str, int]:
    """``partition`` and ``offset``, where both are whole numbers a broker can give; else nothing."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (partition, offset)):
        return {}
    if not (0 <= partition < 2**31 and 0 <= offset <= MAX_OFFSET):
        return {}
    return {"partition": partition, "offset": offset}


def header_pairs(headers: Any) -> Any:
    """Headers as (key, value) pairs, whether the client gives a list of pairs or a mapping."""
    if isinstance(headers, Mapping):
        return list(headers.items())
    if not isinstance(headers, list | tuple):
        return ()
    return [h for h in headers if isinstance(h, tuple | list) and len(h) == 2]


def trace_id(headers: Any) -> str | None:
    """The W3C trace id in a record's ``traceparent`` header, or None (absent, or not one)."""
    for key, value in header_pairs(headers):
        if key == "traceparent" and isinstance(value, bytes):
            match = _TRACEPARENT.fullmatch(value.strip())
            return match.group(1).decode() if match else None
    return None
