"""One saga as the tracker sees it, built once per app (or per ``trace``) from the declaration it
is handed: the engine's timeline code bound to the saga, the choreography's graph, the topics it
reads, its app id and changelog. The tracker imports no saga.

What the declaration does not say, a saga may add as a ``Display``; every part has a default:

- ``labels``: the state each outcome event ends in. By default an outcome that is a
  ``FailureEvent`` ends ``failed``, any other ``succeeded``.
- ``fields``: the fields a saga's list shows and searches, taken from its start event's data by
  ``shown(data) -> {field: text or None}``. By default none; with fields and no ``shown``, each
  field's value when it is text or a number, or the ``name`` of an object.
- ``titles``: a field's column title on the console (by default its name).
- ``line``: a view's one line of summary under ``trace``'s first (by default each field and its
  value, ``?`` for none).
- ``commands(view, groups_down)``: the commands that help with a saga, ``[{"label", "command"}]``,
  shell-quoted, shown on its page (``groups_down``: the participants no consumer serves). The
  engine knows no saga's command line: by default, none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.events import FailureEvent
from engine.observe import flow
from engine.observe.timeline import Timelines
from engine.saga import Saga
from engine.wire.deadletter import dead_letters

SUCCEEDED, FAILED = "succeeded", "failed"

Shown = Callable[[dict[str, Any]], dict[str, str | None]]


@dataclass(frozen=True)
class Display:
    """What a tracker shows of a saga beyond its declaration (see the module's text)."""

    labels: Mapping[str, str] | None = None
    fields: tuple[str, ...] = ()
    shown: Shown | None = None
    titles: Mapping[str, str] = field(default_factory=dict)
    line: Callable[[dict[str, Any]], str] | None = None
    commands: Callable[[dict[str, Any], set[str]], list[dict[str, str]]] | None = None


def default_labels(saga: Saga) -> dict[str, str]:
    """Each outcome's state: ``failed`` for a ``FailureEvent``, ``succeeded`` for any other."""
    return {cls.__name__: FAILED if issubclass(cls, FailureEvent) else SUCCEEDED for cls in saga.outcomes}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return str(value["name"])
    return None


def default_shown(fields: tuple[str, ...]) -> Shown:
    """Each field of a start event's data as text (see the module's text)."""

    def shown(data: dict[str, Any]) -> dict[str, str | None]:
        return {name: _text(data.get(name)) for name in fields}

    return shown


class Tracking:
    """The tracker's view of one saga: what ``create_app`` and ``trace`` build from its declaration."""

    def __init__(self, saga: Saga, display: Display | None = None) -> None:
        display = display or Display()
        self.saga = saga
        self.display = display
        self.labels = dict(display.labels) if display.labels is not None else default_labels(saga)
        self.fields = tuple(display.fields)
        self.titles = {name: display.titles.get(name, name) for name in self.fields}
        self.timelines = Timelines(saga, self.labels, display.shown or default_shown(self.fields), self.fields)
        self.graph = flow.graph(saga)
        self.dead_letter_topics = tuple(dead_letters(t) for t in saga.consumed)
        self.topics = (*saga.topics, saga.retries_topic, *self.dead_letter_topics)  # what the tracker reads
        self.app_id = app_id(saga)
        self.internal_topics = internal_topics(saga)
        failures = {cls.__name__ for step in saga.steps for cls in step.fails_with}
        failed = {self.labels[name] for name in self.timelines.failed_outcomes}
        self.chain = {  # the console's legend and columns (see page.html)
            "saga": saga.name,
            "states": list(self.timelines.states),
            "failures": sorted(failures),
            "compensations": sorted(self.timelines.compensating - failures),
            "outcomes": sorted(self.timelines.outcomes),
            "succeeded": sorted(dict.fromkeys(s for s in self.labels.values() if s not in failed)),
            "failed": sorted(failed),
            "fields": [[name, self.titles[name]] for name in self.fields],
        }

    def line(self, view: dict[str, Any]) -> str:
        """The view's summary line under ``trace``'s first, or "" when the saga shows no field."""
        if self.display.line is not None:
            return self.display.line(view)
        return ", ".join(f"{self.titles[name]} {view.get(name) or '?'}" for name in self.fields)

    def commands(self, view: dict[str, Any], groups_down: set[str]) -> list[dict[str, str]]:
        """The commands that help with the saga of ``view`` (none unless the display says)."""
        return self.display.commands(view, groups_down) if self.display.commands is not None else []


def app_id(saga: Saga) -> str:
    """The tracker's faust app id (its consumer group): ``<saga name>-tracker``."""
    return f"{saga.name}-tracker"


def internal_topics(saga: Saga) -> tuple[str, ...]:
    """The topics the tracker makes for itself: its table's changelog (faust names it so)."""
    return (f"{app_id(saga)}-sagas-changelog",)
