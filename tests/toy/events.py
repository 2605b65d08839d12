"""What the toy saga says: its events, the topic each goes to."""

from __future__ import annotations

from typing import Annotated, ClassVar

from engine import Event, FailureEvent, bounded

FIRST = "toy.first"
SECOND = "toy.second"
FAILURES = "toy.failures"
OUTCOMES = "toy.outcomes"

Name = Annotated[str, bounded(64, min_length=1)]


class Toy(Event):
    name: Name  # what the steps count under
    refuse: bool = False  # the second step refuses it: the saga unwinds


class Asked(Toy):
    """The start event."""

    topic: ClassVar[str] = FIRST


class FirstDone(Toy):
    topic: ClassVar[str] = SECOND


class SecondDone(Toy):
    """The success outcome."""

    topic: ClassVar[str] = OUTCOMES


class ToyFailure(Toy, FailureEvent):
    topic: ClassVar[str] = FAILURES


class FirstFailed(ToyFailure):
    """The first step could not be done: nothing to undo."""


class SecondFailed(ToyFailure):
    """The second step refused: the first is undone."""


class ToyFailed(ToyFailure):
    """The failure outcome, once the first step is undone."""

    topic: ClassVar[str] = OUTCOMES
