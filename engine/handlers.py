"""What a handler's annotations say: the events it consumes (its first parameter's annotation)
and the events it publishes (its return annotation), read once, when a saga is declared
(engine.saga). A handler whose annotations cannot be read is refused in one line."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from engine.events import Event, FailureEvent
from engine.participant import Handler


def events_in(annotation: Any) -> list[type[Event]]:
    """The event classes an annotation names: ``A``, ``A | B``, ``list[A | B]``, ``Sequence[A]`` …"""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, Event) and annotation not in (Event, FailureEvent) else []
    found: list[type[Event]] = []
    for arg in typing.get_args(annotation):
        found += [cls for cls in events_in(arg) if cls not in found]
    return found


def hints(function: Callable[..., Any], role: str) -> tuple[Any, Any]:
    """The annotation of ``function``'s first parameter and of what it returns."""
    name = getattr(function, "__qualname__", repr(function))
    try:
        annotations = typing.get_type_hints(function)
        first = next(iter(inspect.signature(function).parameters))
    except (NameError, TypeError, StopIteration) as exc:
        raise ValueError(f"{role} {name}: cannot read its annotations ({exc})") from None
    return annotations.get(first), annotations.get("return")


def consumed_by(handler: Handler, role: str) -> list[type[Event]]:
    """The events a handler consumes: its first parameter's annotation (``event: A`` or ``A | B``)."""
    first, _ = hints(handler, role)
    found = events_in(first)
    if not found:
        name = getattr(handler, "__qualname__", repr(handler))
        raise ValueError(f"{role} {name}: annotate its first parameter with the event it consumes, "
                         f"e.g. def {name}(event: MyEvent, uow: UnitOfWork[...]) -> list[...]")  # fmt: skip
    return found


def published_by(function: Callable[..., Any], role: str) -> list[type[Event]]:
    """The events a handler (or ``give_up``) says it returns: ``-> list[A | B]``, ``-> A``."""
    return events_in(hints(function, role)[1])
