"""The tracker's requests, checked: what a query asks for, or why it is refused (a 400 with one
line). A request is anything a browser or a script can send, so each parameter is bounded, known
and given once."""

from __future__ import annotations

import re
from typing import Any

from engine.observe.timeline import CONTROL, bad_saga_id, instant
from engine.tracker.index import Search, decode_cursor

__all__ = ["Refused", "bad_query", "bad_saga_id", "bad_limit", "search"]

MAX_LIMIT = 1000
MAX_SEARCH = 200


class Refused(ValueError):
    """A request the tracker does not answer: its message is the 400's one line."""


def shown(text: str) -> str:
    """A value from a request, quoted and cut short, for an error message."""
    return repr(text[:60]) + ("…" if len(text) > 60 else "")


def bad_query(query: Any, allowed: tuple[str, ...]) -> str | None:
    """Why the query string of a request is refused, or None: unknown or repeated parameters."""
    for name in query:
        if name not in allowed:
            expected = ", ".join(allowed) if allowed else "none"
            return f"unknown query parameter {shown(name)}; expected {expected}"
        if len(query.getall(name)) > 1:
            return f"query parameter {name!r} given more than once"
    return None


def bad_limit(text: str) -> str | None:
    if not (re.fullmatch(r"[0-9]{1,4}", text, re.ASCII) and 1 <= int(text) <= MAX_LIMIT):
        return f"limit must be a whole number from 1 to {MAX_LIMIT}, got {shown(text)}"
    return None


def list_parameters(fields: tuple[str, ...]) -> tuple[str, ...]:
    """The parameters of ``GET /sagas``: ``fields`` are the summary fields searched one by one."""
    return ("state", "q", "saga", *fields, "reason", "since", "until", "limit", "after")


def search(query: Any, states: tuple[str, ...], fields: tuple[str, ...]) -> Search:
    """The ``Search`` a ``GET /sagas`` query asks for; Refused with the reason."""
    why = bad_query(query, list_parameters(fields))
    if why is not None:
        raise Refused(why)
    state = query.get("state") or None
    if state is not None and state not in states:
        raise Refused(f"unknown state {shown(state)}; expected one of {', '.join(states)}")
    limit = query.get("limit", "50")
    why = bad_limit(limit)
    if why is not None:
        raise Refused(why)
    texts: dict[str, str] = {}
    for name in ("q", "saga", *fields, "reason"):
        text = query.get(name) or None
        if text is None:
            continue
        if len(text) > MAX_SEARCH or CONTROL.search(text):
            raise Refused(f"{name} is 1 to {MAX_SEARCH} characters with no control character, got {shown(text)}")
        texts[name] = text
    since, until = (_time(query, name) for name in ("since", "until"))
    if since is not None and until is not None and until < since:
        raise Refused("until is before since")
    after = query.get("after") or None
    cursor = decode_cursor(after) if after is not None else None
    if after is not None and cursor is None:
        raise Refused(f"after is not a cursor this tracker gave (the 'next' of a page), got {shown(after)}")
    searched = ("saga_id", *fields, "reason")  # Row.searched, in order
    return Search(
        state=state,
        anywhere=texts["q"].lower() if "q" in texts else None,
        prefixes=tuple((searched.index(name), texts[name].lower()) for name in (*fields, "reason") if name in texts),
        saga=texts.get("saga"),
        since=since,
        until=until,
        limit=int(limit),
        after=cursor,
    )


def _time(query: Any, name: str) -> float | None:
    text = query.get(name) or None
    if text is None:
        return None
    at = instant(text)
    if at == float("-inf"):
        raise Refused(f"{name} must be an RFC 3339 date-time (2026-12-03T14:00:00Z), got {shown(text)}")
    return at
