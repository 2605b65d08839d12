"""What the third step says: its success (the saga's new outcome) and its failure."""

from __future__ import annotations

from typing import ClassVar

from tests.toy.events import Toy, ToyFailure

DONE = "toy.third.done"


class ThirdDone(Toy):
    """The success outcome, once the third step is done too."""

    topic: ClassVar[str] = DONE


class ThirdFailed(ToyFailure):
    """The third step refused (a name that starts with "no"): the first step is undone."""
