"""What the tracker shows of the capture saga beyond its declaration: the state each outcome ends in
(``delivered``, ``failed``), the trainer and the wild Pokémon of each saga. ``pokesaga run tracker``
and ``pokesaga trace`` hand ``DISPLAY`` to the engine's tracker with ``CAPTURE``.

Below, the capture saga's timeline functions (the engine's timeline code bound to ``CAPTURE`` and
``DISPLAY``, as the tracker builds them): what they return is the tracker's JSON,
``{"saga_id", "trainer", "pokemon", "started_at", "ended_at", "outcome", "events", "retries"}``.
"""

from __future__ import annotations

import shlex
from typing import Any

from capture.saga import CAPTURE
from engine.observe.timeline import (  # noqa: F401  (re-exported: one import for the capture saga's timelines)
    MAX_DEAD_LETTERS,
    MAX_DETAIL,
    MAX_ERROR,
    MAX_EVENTS,
    MAX_ID,
    MAX_NAME,
    MAX_TYPE,
    NOTICE,
    REASONS,
    NotAnEvent,
    Timelines,
    canonical_rfc3339,
    causal_order,
    duration_ms,
    instant,
    last_progress,
    newest_first,
)
from engine.tracker.tracking import Display, Tracking
from engine.wire.text import saga_argument, saga_option

FIELDS = ("trainer", "pokemon")
LABELS = {"PokemonDelivered": "delivered", "CaptureFailed": "failed"}


def _shown(data: dict[str, Any]) -> dict[str, str | None]:
    """Who is catching what: the names in a start event's data."""
    return {field: who.get("name") if isinstance(who := data.get(field), dict) else None for field in FIELDS}


def _line(view: dict[str, Any]) -> str:
    """``trace``'s summary line: who caught (or tried to catch) what."""
    return f"trainer {view['trainer'] or '?'}, {view['pokemon'] or '?'}"


def commands(view: dict[str, Any], groups_down: set[str]) -> list[dict[str, str]]:
    """The ``pokesaga`` commands that help with this saga, shell-quoted, ready to copy (the
    tracker's ``GET /sagas/{id}`` and its page show them)."""
    saga, option = saga_argument(view["saga_id"]), saga_option(view["saga_id"])
    found = [{"label": "its timeline, read from the topics (no tracker needed)", "command": f"pokesaga trace {saga}"}]
    if view["state"] in ("failed", "retrying", "stuck", "compensating", "refused", "needs_operator"):
        found.append({"label": "what each service's database holds of it", "command": f"pokesaga inspect saga {saga}"})
    for source in dict.fromkeys(d["source"] for d in view.get("dead_letters", [])):
        topic = shlex.quote(source)
        found.append(
            {"label": f"its dead letters on {source}.dlq, once the cause is fixed: see them first",
             "command": f"pokesaga dlq replay {topic} {option} --dry-run"}
        )  # fmt: skip
        found.append({"label": "then re-publish them", "command": f"pokesaga dlq replay {topic} {option}"})
    waiting = view.get("waiting_on")
    if waiting and waiting in groups_down:
        service = waiting.split(".")[0]
        found.append({"label": f"no {waiting} is consuming: start it", "command": f"pokesaga run {service}"})
    return found


DISPLAY = Display(
    labels=LABELS, fields=FIELDS, shown=_shown, titles={"pokemon": "Pokémon"}, line=_line, commands=commands
)
TRACKING = Tracking(CAPTURE, DISPLAY)
TIMELINES = TRACKING.timelines

OUTCOMES = TIMELINES.outcomes
COMPENSATING = TIMELINES.compensating
STATES = TIMELINES.states
NEXT = TIMELINES.next
parse = TIMELINES.parse
parse_dead_letter = TIMELINES.parse_dead_letter
add_dead_letter = TIMELINES.add_dead_letter
new = TIMELINES.new
restore = TIMELINES.restore
add = TIMELINES.add
state = TIMELINES.state
waiting_on = TIMELINES.waiting_on
retrying = TIMELINES.retrying
settled_at = TIMELINES.settled_at
expired = TIMELINES.expired
view = TIMELINES.view
bars = TIMELINES.bars

APP_ID = TRACKING.app_id  # pokesaga-tracker: the tracker's consumer group
INTERNAL_TOPICS = TRACKING.internal_topics  # its changelog, pokesaga-tracker-sagas-changelog
DEAD_LETTER_TOPICS = TRACKING.dead_letter_topics
