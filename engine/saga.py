"""A saga, declared once: its services, its steps in order, the compensations that unwind them.

Everything else derives from the declaration: the participants and their consumer groups, the
topics to create, which participant an event waits on, the chain a relay mimics, the documents.
The engine is handed a ``Saga`` and never imports one.

    transfer = Saga(
        name="transfer",
        events=(MoneyRequested, Withdrawn, Deposited, DepositFailed, WithdrawalRefunded),
        steps=(Step(bank, consumes="transfer.withdraw", handlers={"MoneyRequested": withdraw}, give_up=...), ...),
        compensations=(Compensation(bank, handlers={"DepositFailed": undo_withdraw}),),
        outcomes=(Deposited, WithdrawalRefunded),
    )
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData

from engine.events import Event, FailureEvent
from engine.participant import GiveUp, Handler, Participant
from engine.store.db import messaging_tables, positions_table, rebuild_tables
from engine.wire.deadletter import dead_letters


@dataclass(frozen=True)
class Service:
    """A service's own database: its tables, the repository its handlers get, its migrations."""

    name: str
    metadata: MetaData
    repository: Callable[[Connection], Any]
    migrations: Path

    def __post_init__(self) -> None:
        messaging_tables(self.metadata)  # every service database holds the inbox and the outbox,
        rebuild_tables(self.metadata)  # and the rebuild state and the parked records,
        positions_table(self.metadata)  # and where each consumer is on each partition


@dataclass(frozen=True)
class Step:
    """One forward step: the topic it consumes, its handlers by event type, and ``give_up``, which
    records the step's failure and returns its failure event when the step cannot be done."""

    service: Service
    consumes: str
    handlers: Mapping[str, Handler]
    give_up: GiveUp
    succeeds_with: tuple[type[Event], ...] = ()
    fails_with: tuple[type[FailureEvent], ...] = ()

    @property
    def name(self) -> str:
        return self.service.name


@dataclass(frozen=True)
class Compensation:
    """A service's compensating handlers, by the failure event type each one undoes."""

    service: Service
    handlers: Mapping[str, Handler]
    publishes: tuple[type[FailureEvent], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.service.name}.compensations"


@dataclass(frozen=True)
class Saga:
    """The whole choreography: steps in forward order, compensations in the order they unwind."""

    name: str
    events: tuple[type[Event], ...]
    steps: tuple[Step, ...]
    compensations: tuple[Compensation, ...]
    outcomes: tuple[type[Event], ...]
    data_version: int = 1
    retries: str = ""  # the retry notices' topic; default: "<first topic's prefix>.retries"

    def __post_init__(self) -> None:
        known = set(self.types)
        for participant in self.participants.values():
            unknown = set(participant.handlers) - known
            if unknown:
                raise ValueError(f"{participant.name} handles {sorted(unknown)}, not events of saga {self.name}")

    @cached_property
    def types(self) -> dict[str, type[Event]]:
        """Every event of the saga, by its type name (the CloudEvents ``type``)."""
        return {cls.__name__: cls for cls in self.events}

    @cached_property
    def services(self) -> dict[str, Service]:
        found: dict[str, Service] = {}
        for service in [step.service for step in self.steps] + [comp.service for comp in self.compensations]:
            found.setdefault(service.name, service)
        return found

    @cached_property
    def participants(self) -> dict[str, Participant]:
        """Every consumer group: each step (named for its service), then each compensator."""
        found = {
            step.name: Participant(
                step.name, step.service.name, (step.consumes,), step.handlers, step.service.metadata,
                step.service.repository, step.give_up, source=f"{self.name}/{step.name}",
                retries_topic=self.retries_topic,
            )
            for step in self.steps
        }  # fmt: skip
        for comp in self.compensations:
            (topic,) = {self.types[t].topic for t in comp.handlers}
            found[comp.name] = Participant(
                comp.name, comp.service.name, (topic,), comp.handlers, comp.service.metadata,
                comp.service.repository, source=f"{self.name}/{comp.name}", retries_topic=self.retries_topic,
            )  # fmt: skip
        return found

    @cached_property
    def topics(self) -> tuple[str, ...]:
        """Every topic an event of the saga goes to, in the order of the steps."""
        ordered = [step.consumes for step in self.steps] + [cls.topic for cls in self.events]
        return tuple(dict.fromkeys(ordered))

    @cached_property
    def consumed(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for p in self.participants.values() for t in p.topics))

    @property
    def retries_topic(self) -> str:
        """Where participants say they parked a record to retry it (engine.wire.notices)."""
        if self.retries:
            return self.retries
        first = self.steps[0].consumes if self.steps else self.name
        return f"{first.split('.')[0] if '.' in first else self.name}.retries"

    def all_topics(self) -> list[str]:
        """Every topic to create: the saga's, the dead-letter topic of each one consumed, the retry notices'."""
        return [*self.topics, *(dead_letters(t) for t in self.consumed), self.retries_topic]

    @cached_property
    def groups(self) -> dict[str, list[str]]:
        """Each participant's consumer group and the topics it reads."""
        return {p.name: list(p.topics) for p in self.participants.values()}

    @cached_property
    def handled_by(self) -> dict[str, str]:
        """Event type → the participant that acts on it: what a saga stopped there waits on."""
        return {t: p.name for p in self.participants.values() for t in p.handlers}

    @cached_property
    def outcome_types(self) -> frozenset[str]:
        return frozenset(cls.__name__ for cls in self.outcomes)

    @cached_property
    def compensating_types(self) -> frozenset[str]:
        """Failure events on their way back: a saga that saw one is unwinding."""
        return frozenset(
            name for name, cls in self.types.items() if issubclass(cls, FailureEvent) and name not in self.outcome_types
        )

    @cached_property
    def start(self) -> type[Event]:
        """The event that starts a saga: the one the first step handles."""
        (first,) = self.steps[0].handlers
        return self.types[first]

    def service_of(self, target: str) -> list[Participant]:
        """A service's name → its step and its compensator; ``compensations.NAME`` → the compensator alone."""
        if target.startswith("compensations."):
            name = target.removeprefix("compensations.") + ".compensations"
            if name in self.participants:
                return [self.participants[name]]
        elif target in self.services:
            return [p for p in self.participants.values() if p.service == target]
        runnable = [*self.services, *(f"compensations.{c.service.name}" for c in self.compensations)]
        raise ValueError(f"unknown service {target!r}; expected one of {', '.join(runnable)}")
