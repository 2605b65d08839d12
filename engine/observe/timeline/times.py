"""Times on a timeline: whatever a record or a stored timeline holds, read as RFC 3339 text in UTC
(``canonical_rfc3339``) or as seconds since the epoch (``instant``). Both are total: a value that
is no date-time (of any type, any length, a 30th of February) is None, or -inf.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))?", re.ASCII
)


def canonical_rfc3339(value: Any) -> str | None:
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
