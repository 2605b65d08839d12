"""What a participant is: a consumer group, the topics it reads, its handlers, its database.

Every service step and every compensator is one of these, and the same loop runs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, MetaData

from engine.events import Event, FailureEvent

R = TypeVar("R")


@dataclass(frozen=True)
class UnitOfWork(Generic[R]):
    """What a handler receives beside its event.

    ``records`` is the service's own repository, bound to the open transaction: whatever
    the handler changes there commits together with the inbox row and the outbox rows.
    """

    saga_id: str
    event_id: str
    records: R
    settings: Any  # the saga's Settings (a subclass of engine.settings.Settings)
    # What this participant published for this event before, when its database is being
    # rebuilt from the topics: a handler whose decision depends on other sagas takes it again.
    recorded: tuple[Event, ...] = ()


Handler = Callable[[Any, UnitOfWork[Any]], Sequence[Event]]
GiveUp = Callable[[Any, UnitOfWork[Any], str, str], FailureEvent]


class Rejected(Exception):
    """Raised by a handler when its record cannot be applied at all, whatever is retried: the
    record names a saga this participant has no trace of, say. The record becomes a dead letter
    with ``kind: detail`` as its reason; nothing it did is kept, and it is never retried.

    A business failure is not this: it is a failure event the handler returns."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.reason = f"{kind}: {detail}"


@dataclass(frozen=True)
class Participant:
    """One consumer group: it reads ``topics``, applies ``handlers``, writes ``service``'s DB."""

    name: str
    service: str
    topics: tuple[str, ...]
    handlers: Mapping[str, Handler]
    metadata: MetaData
    repository: Callable[[Connection], Any]
    # A forward step's failure event when its retries run out; None for a compensator,
    # whose record is dead-lettered instead when it cannot proceed.
    on_exhausted: GiveUp | None = None
    source: str = ""  # the CloudEvents ``source`` of what it publishes, "<saga>/<name>"
    retries_topic: str = ""  # where it says it parked a record to retry it (engine.wire.notices); "": nowhere
    steps: tuple[str, ...] = ()  # the saga's steps, in order: what a failure event's failed_step and undone may name

    @property
    def compensator(self) -> bool:
        return self.on_exhausted is None
