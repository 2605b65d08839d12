"""A saga, declared once: its services, its steps in order, the compensations that unwind them.

A step is declared by its handler: the event it consumes comes from the handler's first
parameter's annotation, the topic from that event, what it publishes from its return
annotation (failure events are the step's failures). The rest derives from the declaration:
the saga's events, each compensator's listen-set, the outcomes, the participants and their
consumer groups, the topics to create, which participant an event waits on. The engine is
handed a ``Saga`` and never imports one.

    withdrawals = Service("withdrawals", WithdrawalRecords)   # tables and migrations beside it
    deposits = Service("deposits", DepositRecords)
    TRANSFER = Saga("transfer", steps=(Step(withdrawals, withdraw, give_up=...), Step(deposits, deposit)),
                    compensations=(Compensation(withdrawals, undo_withdraw),))

A compensator listens to the failures of the steps after its own, up to the next step that has
a compensator, and to what that compensator publishes; the first compensator also turns the
failures of the steps before it (its own included) into the outcome. The outcomes are the last
step's success and what the first compensator publishes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData

from engine import versions
from engine.events import Event, FailureEvent
from engine.handlers import consumed_by, published_by
from engine.participant import GiveUp, Handler, Participant
from engine.store import db
from engine.wire.deadletter import dead_letters


@dataclass(frozen=True)
class Service:
    """A service's own database: the repository its handlers get, its tables, its migrations.

    ``metadata`` defaults to the ``metadata`` of the module that defines ``repository`` and
    ``migrations`` to the ``migrations`` folder beside that module. Both hold the service's own
    tables only: the engine's (inbox, outbox, positions, rebuild, parked) have their own
    migrations (engine.store.migrate)."""

    name: str
    repository: Callable[[Connection], Any]
    metadata: MetaData = None  # type: ignore[assignment]  # filled in below
    migrations: Path = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.name):
            raise ValueError(f"service {self.name!r:.80}: a service's name is 1 to 64 letters, digits, '_' or '-' "
                             "(it names consumer groups, databases and failed steps)")  # fmt: skip
        module = sys.modules.get(getattr(self.repository, "__module__", ""), None)
        if self.metadata is None:
            found = getattr(module, "metadata", None)
            if not isinstance(found, MetaData):
                raise ValueError(f"service {self.name}: no metadata given, and {self.repository!r}'s module has "
                                 "no MetaData named 'metadata'")  # fmt: skip
            object.__setattr__(self, "metadata", found)
        if self.migrations is None:
            if module is None or getattr(module, "__file__", None) is None:
                raise ValueError(f"service {self.name}: no migrations folder given, and none beside its repository")
            object.__setattr__(self, "migrations", Path(module.__file__).parent / "migrations")
        taken = sorted(set(self.metadata.tables) & set(db.METADATA.tables))
        if taken:
            raise ValueError(f"service {self.name}: the tables {taken} are the engine's (engine.store.db); "
                             "a service's metadata holds only its own")  # fmt: skip


def _read_from(types: Iterable[type[Event]]) -> tuple[str, ...]:
    """The topics a participant acting on ``types`` reads: each event's, then where each went before."""
    types = list(types)
    return tuple(dict.fromkeys([*(cls.topic for cls in types), *(t for cls in types for t in cls.former_topics)]))


def _repeated(names: list[str]) -> list[str]:
    """The names given more than once, sorted."""
    return sorted({n for n in names if names.count(n) > 1})


def _failing_with(cls: type[FailureEvent]) -> GiveUp:
    def give_up(event: Event, uow: Any, reason: str, detail: str) -> FailureEvent:
        return cls.of(event, reason, detail)

    give_up.__qualname__ = f"give_up_with_{cls.__name__}"
    return give_up


@dataclass(frozen=True, init=False)
class Step:
    """One forward step: its service and its handler(s). ``give_up`` records the step's failure
    and returns its failure event when the step cannot be done (retries exhausted, a deadline);
    without one, a step with a single failure event returns it, recording nothing.

    What it consumes and publishes is read from the handlers' annotations; ``succeeds_with`` and
    ``fails_with`` say it where a handler is annotated only ``-> list[Event]``."""

    service: Service
    handlers: Mapping[str, Handler]
    give_up: GiveUp
    consumes: str
    succeeds_with: tuple[type[Event], ...]
    fails_with: tuple[type[FailureEvent], ...]
    reads: tuple[type[Event], ...]

    def __init__(
        self,
        service: Service,
        *handlers: Handler,
        give_up: GiveUp | None = None,
        succeeds_with: tuple[type[Event], ...] = (),
        fails_with: tuple[type[FailureEvent], ...] = (),
    ) -> None:
        role = f"step {service.name}:"
        if not handlers:
            raise ValueError(f"{role} give it the handler of the event it consumes")
        reads: dict[type[Event], Handler] = {}
        for handler in handlers:
            for cls in consumed_by(handler, role):
                reads.setdefault(cls, handler)
        topics = sorted({cls.topic for cls in reads})
        if len(topics) != 1:
            raise ValueError(f"{role} its events go to {len(topics)} topics ({', '.join(topics)}); a step reads one")
        published = [cls for h in handlers for cls in published_by(h, role)]
        if give_up is not None:
            published += published_by(give_up, role)
        succeeds = succeeds_with or tuple(dict.fromkeys(c for c in published if not issubclass(c, FailureEvent)))
        fails = fails_with or tuple(dict.fromkeys(c for c in published if issubclass(c, FailureEvent)))
        if give_up is None:
            if len(fails) != 1:
                raise ValueError(f"{role} it has {len(fails)} failure events: give it a give_up function "
                                 "that returns the one to publish when the step cannot be done")  # fmt: skip
            give_up = _failing_with(fails[0])
        for name, value in (
            ("service", service), ("handlers", {cls.__name__: h for cls, h in reads.items()}), ("give_up", give_up),
            ("consumes", topics[0]), ("succeeds_with", succeeds), ("fails_with", fails), ("reads", tuple(reads)),
        ):  # fmt: skip
            object.__setattr__(self, name, value)

    @property
    def name(self) -> str:
        return self.service.name


@dataclass(frozen=True)
class Compensation:
    """A service's compensating handler. The failure events it undoes are derived by the saga
    (see the module's docstring); what it publishes is read from the handler's return annotation.
    ``handler`` may instead be a mapping of event type → handler, to say the listen-set by hand."""

    service: Service
    handler: Handler | Mapping[str, Handler]
    publishes: tuple[type[FailureEvent], ...] = ()
    handlers: Mapping[str, Handler] = field(default_factory=dict)  # filled in by the saga

    def __post_init__(self) -> None:
        role = f"compensation {self.service.name}:"
        if isinstance(self.handler, Mapping):
            object.__setattr__(self, "handlers", dict(self.handler))
            functions = list(dict.fromkeys(self.handler.values()))
        else:
            functions = [self.handler]
        if not self.publishes:
            found = [c for f in functions for c in published_by(f, role) if issubclass(c, FailureEvent)]
            if not found:
                raise ValueError(f"{role} say what it publishes: annotate its handler '-> list[MyFailed]' "
                                 "or pass publishes=(MyFailed,)")  # fmt: skip
            object.__setattr__(self, "publishes", tuple(dict.fromkeys(found)))

    @property
    def name(self) -> str:
        return f"{self.service.name}.compensations"

    def listening(self, types: list[type[Event]]) -> Compensation:
        """This compensation, undoing ``types`` (unless its listen-set was given by hand)."""
        if isinstance(self.handler, Mapping):
            return self  # said by hand
        accepts = tuple(consumed_by(self.handler, f"compensation {self.service.name}:"))
        wrong = [cls.__name__ for cls in types if not issubclass(cls, accepts)]
        if wrong:
            raise ValueError(f"compensation {self.service.name}: it undoes {', '.join(wrong)}, but its handler's "
                             f"event is annotated {' | '.join(c.__name__ for c in accepts)}")  # fmt: skip
        return replace(self, handlers={cls.__name__: self.handler for cls in types})


@dataclass(frozen=True)
class Saga:
    """The whole choreography: steps in forward order, compensations (in any order: they unwind
    newest step first). ``events`` and ``outcomes`` are derived when not given; ``events`` given
    adds to the derived ones (an event no participant publishes yet, say). ``schemas``: the directory
    of its events' released schemas (``<EventType>/v<N>.json``, engine.schemas), if it keeps them."""

    name: str
    steps: tuple[Step, ...]
    compensations: tuple[Compensation, ...] = ()
    events: tuple[type[Event], ...] = ()
    outcomes: tuple[type[Event], ...] = ()
    retries: str = ""  # the retry notices' topic; default: "<first topic's prefix>.retries"
    schemas: Path | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"saga {self.name}: it has no steps")
        names = [step.name for step in self.steps]
        twice = _repeated(names)
        if twice:
            raise ValueError(f"saga {self.name}: a service has one step; {', '.join(twice)} has more")
        object.__setattr__(self, "compensations", self._bound(self.compensations))
        derived = [  # the way forward, then the failures by step, then the way back
            *(cls for step in self.steps for cls in (*step.reads, *step.succeeds_with)),
            *(cls for step in self.steps for cls in step.fails_with),
            *(cls for comp in self.compensations for cls in comp.publishes),
        ]
        object.__setattr__(self, "events", tuple(dict.fromkeys([*derived, *self.events])))
        if not self.outcomes:
            first = self.compensations[-1].publishes if self.compensations else ()
            failures = () if self.compensations else tuple(c for s in self.steps for c in s.fails_with)
            object.__setattr__(self, "outcomes", tuple(dict.fromkeys([*self.steps[-1].succeeds_with, *first,
                                                                      *failures])))  # fmt: skip
        acting: dict[str, str] = {}
        for participant in self.participants.values():
            for name in participant.handlers:
                if name in acting:
                    raise ValueError(f"saga {self.name}: {name} is acted on by {acting[name]} and {participant.name}; "
                                     "an event has one participant that acts on it")  # fmt: skip
                acting[name] = participant.name
        starts_as_failure = [c.__name__ for s in self.steps for c in s.reads if issubclass(c, FailureEvent)]
        if starts_as_failure:
            raise ValueError(f"saga {self.name}: a step consumes {starts_as_failure[0]}, a failure event: failures "
                             "go to the compensations")  # fmt: skip
        for cls in self.events:
            versions.check(cls)
        known = set(self.types)
        for participant in self.participants.values():
            unknown = set(participant.handlers) - known
            if unknown:
                raise ValueError(f"{participant.name} handles {sorted(unknown)}, not events of saga {self.name}")

    def _bound(self, given: tuple[Compensation, ...]) -> tuple[Compensation, ...]:
        """The compensations, newest step first, each with its listen-set (see the module)."""
        index = {step.name: i for i, step in enumerate(self.steps)}
        for comp in given:
            if comp.service.name not in index:
                raise ValueError(f"compensation {comp.service.name}: saga {self.name} has no step of that service")
        twice = _repeated([c.service.name for c in given])
        if twice:
            raise ValueError(f"compensation {twice[0]}: given twice; a service has one compensator")
        by_step = {index[comp.service.name]: comp for comp in given}
        compensated = sorted(by_step)
        bound = {}
        for k, i in enumerate(compensated):
            after = compensated[k + 1] if k + 1 < len(compensated) else None
            start = 0 if k == 0 else i + 1
            end = after if after is not None else len(self.steps) - 1
            undoes = [cls for step in self.steps[start : end + 1] for cls in step.fails_with]
            if after is not None:
                undoes += list(by_step[after].publishes)
            if not undoes and not isinstance(by_step[i].handler, Mapping):
                raise ValueError(f"compensation {self.steps[i].name}: no step from it on can fail, so it has "
                                 "nothing to undo; drop it")  # fmt: skip
            bound[i] = by_step[i].listening(list(dict.fromkeys(undoes)))
        return tuple(bound[i] for i in reversed(compensated))

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
        steps = tuple(step.name for step in self.steps)
        found = {
            step.name: Participant(
                step.name, step.service.name, _read_from(step.reads), step.handlers, step.service.metadata,
                step.service.repository, step.give_up, source=f"{self.name}/{step.name}",
                retries_topic=self.retries_topic, steps=steps,
            )
            for step in self.steps
        }  # fmt: skip
        for comp in self.compensations:
            found[comp.name] = Participant(
                comp.name, comp.service.name, _read_from(self.types[t] for t in comp.handlers), comp.handlers,
                comp.service.metadata, comp.service.repository, source=f"{self.name}/{comp.name}",
                retries_topic=self.retries_topic, steps=steps,
            )  # fmt: skip
        return found

    @cached_property
    def topics(self) -> tuple[str, ...]:
        """Every topic an event of the saga goes to, in the order of the steps, then where they went
        before (``Event.former_topics``)."""
        ordered = [step.consumes for step in self.steps] + [cls.topic for cls in self.events]
        ordered += [topic for cls in self.events for topic in cls.former_topics]
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
    def published(self) -> dict[str, tuple[type[Event], ...]]:
        """Each participant's name → the events it publishes."""
        found = {step.name: tuple(dict.fromkeys((*step.succeeds_with, *step.fails_with))) for step in self.steps}
        return found | {comp.name: comp.publishes for comp in self.compensations}

    def published_topics(self, participants: Iterable[str]) -> list[str]:
        """Where ``participants`` (by name) publish: all a rebuild of theirs reads back (engine.worker.rebuild)."""
        return list(dict.fromkeys(t for name in participants for cls in self.published[name] for t in cls.read_from()))

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
        return self.steps[0].reads[0]

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
