"""What every saga's events are to the engine.

An event is a frozen pydantic model that names the topic it goes to. A failure event says why
the saga failed, at which step, and which steps have been undone so far: the compensators pass
it backwards, each adding its own step to ``undone``. Strings have bounds and refuse NUL, the
same on every database, so a bad value is refused at the door with the field's name.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL; refused everywhere alike


def bounded(max_length: int, min_length: int = 0) -> StringConstraints:
    """Bounds of a string, and no NUL character (shown in the exported JSON Schemas)."""
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=NO_NUL)


Reason = Annotated[str, bounded(64, min_length=1)]
Detail = Annotated[str, bounded(2000)]
StepName = Annotated[str, bounded(64, min_length=1)]


class Event(BaseModel):
    """Base of every saga event. Fields added by a newer producer are ignored, not rejected."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    topic: ClassVar[str]


class FailureEvent(Event):
    """A step failed, or a compensation passed the failure on."""

    reason: Reason
    failed_step: StepName
    detail: Detail = Field(default="", description="What went wrong, for people (e.g. the last error).")
    undone: tuple[StepName, ...] = Field(default=(), max_length=16, description="Steps undone so far, newest first.")
