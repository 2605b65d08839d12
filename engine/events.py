"""What every saga's events are to the engine.

An event is a frozen pydantic model that names the topic it goes to. A failure event says why
the saga failed, at which step, and which steps have been undone so far: the compensators pass
it backwards, each adding its own step to ``undone``. Strings have bounds and refuse NUL, the
same on every database, so a bad value is refused at the door with the field's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL; refused everywhere alike


def bounded(max_length: int, min_length: int = 0) -> StringConstraints:
    """Bounds of a string, and no NUL character (shown in the exported JSON Schemas)."""
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=NO_NUL)


Reason = Annotated[str, bounded(64, min_length=1)]
Detail = Annotated[str, bounded(2000)]
StepName = Annotated[str, bounded(64, min_length=1)]


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Event(BaseModel):
    """Base of every saga event. Fields added by a newer producer are ignored, not rejected.

    ``dataversion`` is this shape's version (the envelope's ``dataversion``); ``upcasters`` turn
    each older version's data into the next's: ``{1: f}`` makes version 1 data version 2 data. An
    upcaster that only adds fields with defaults is ``added("field", ...)``: a service pinned to
    the older version (``POKESAGA_PUBLISH_VERSIONS``) can then publish it, the fields dropped
    (engine.versions).

    ``former_topics``: where an earlier release published this event. Its consumers still read
    them, and accept it there, so records written before an upgrade are applied after it; no one
    is given Write on them (``pokesaga acls``). Drop one once every consumer group has read it
    to its end (the metric ``pokesaga_consumer_lag``, or the console)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    topic: ClassVar[str]
    former_topics: ClassVar[tuple[str, ...]] = ()
    dataversion: ClassVar[int] = 1
    upcasters: ClassVar[Mapping[int, Upcaster]] = {}

    @classmethod
    def read_from(cls) -> tuple[str, ...]:
        """Every topic this event is read from: where it goes, then where it went."""
        return (cls.topic, *(t for t in cls.former_topics if t != cls.topic))

    @classmethod
    def belongs_on(cls, topic: str) -> bool:
        """Whether a record of this event may stand on ``topic``: its topic or a former one."""
        return topic in cls.read_from()


class FailureEvent(Event):
    """A step failed, or a compensation passed the failure on.

    ``failed_step`` left empty is filled in by the engine with the step that published it; on
    the wire, the engine refuses a ``failed_step`` or an ``undone`` that names no step of the
    saga, and an ``undone`` longer than its steps."""

    reason: Reason
    failed_step: Annotated[str, bounded(64)] = Field(default="", description="The step that failed.")
    detail: Detail = Field(default="", description="What went wrong, for people (e.g. the last error).")
    undone: tuple[StepName, ...] = Field(default=(), max_length=16, description="Steps undone so far, newest first.")

    @classmethod
    def of(cls, cause: Event, reason: str | None = None, detail: str | None = None, **fields: Any) -> Self:
        """This failure, carrying ``cause``'s fields: a step's ``WithdrawalFailed.of(event, "no_funds")``,
        a compensation's ``TransferFailed.of(event, undone=(*event.undone, "withdrawals"))``
        (a failure passed on keeps its reason, detail and failed step unless told otherwise)."""
        data = cause.model_dump()
        if reason is not None:
            data["reason"] = reason
        if detail is not None:
            data["detail"] = detail
        return cls(**(data | fields))


def out_of_bounds(event: FailureEvent, steps: tuple[str, ...]) -> str | None:
    """What in a failure event names no step of a saga with ``steps``, in one line; None if nothing."""
    if event.failed_step not in steps:
        return f"failed_step {event.failed_step!r} is no step of the saga ({', '.join(steps)})"
    strangers = [name for name in event.undone if name not in steps]
    if strangers:
        return f"undone names {strangers[0]!r}, no step of the saga ({', '.join(steps)})"
    if len(event.undone) > len(steps):
        return f"undone names {len(event.undone)} steps; the saga has {len(steps)}"
    return None


def attributed(event: Event, step: str) -> Event:
    """``event``, with ``step`` as its ``failed_step`` if it is a failure event that names none."""
    if isinstance(event, FailureEvent) and not event.failed_step:
        return event.model_copy(update={"failed_step": step})
    return event


class Added:
    """An upcaster that adds ``fields`` with their defaults (the model fills them in): the data is
    unchanged on the way up, and dropping them is the way down."""

    def __init__(self, *fields: str) -> None:
        if not fields:
            raise ValueError("added(): name the fields the new version adds")
        self.fields = fields

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def __repr__(self) -> str:
        return f"added({', '.join(map(repr, self.fields))})"


def added(*fields: str) -> Added:
    """The upcaster of a version that only adds ``fields``, each with a default."""
    return Added(*fields)
