"""A test kit: run one handler against its service's tables, in memory, with no broker.

As Temporal's ``ActivityEnvironment`` runs an activity with no server, ``HandlerEnvironment``
runs one of a saga's handlers (a step, a compensation, a step's ``give_up``) as the participant
loop would: in one transaction on the service's own tables, handed a ``UnitOfWork`` that names
the saga. The tables live in an in-memory SQLite database; there is no Kafka::

    from engine.testing import HandlerEnvironment

    env = HandlerEnvironment(CAPTURE.services["pokeball"], settings=Settings(starter_balls=1))
    assert env.run(throw_pokeball, weakened, saga_id="s1") == [caught]  # one transaction, committed
    with env.records() as records:  # the service's repository, to read its state (or arrange it)
        assert records.balls("Sacha") == 0
    env.run(throw_pokeball, weakened, saga_id="s2", recorded=[caught])  # a rebuild: the decision taken before
    env.run(give_up, weakened, "retries_exhausted", "boom", saga_id="s3")  # more arguments follow the event
    with pytest.raises(Rejected):  # a handler that raises leaves the database as it was
        env.run(undo_throw, delivery_failed, saga_id="never-thrown")

The kit runs exactly the function it is given, once. The rest is the engine's and not done
here: the inbox (a second run of the same event applies it again), the outbox, retries,
dead letters, and a rebuild re-applying a recorded give-up (the loop calls the step's
``give_up`` for it instead of the handler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from engine.events import Event, attributed
from engine.participant import UnitOfWork
from engine.saga import Service
from engine.settings import Settings
from engine.store.db import METADATA, make_engine

T = TypeVar("T")


class HandlerEnvironment:
    """``service``'s tables (and the engine's inbox and outbox) in a new in-memory database.

    ``settings`` is what handlers find in ``uow.settings``: the saga's own Settings when they
    read its fields; the engine's defaults otherwise."""

    def __init__(self, service: Service, settings: Settings | None = None) -> None:
        self.service = service
        self.settings = settings if settings is not None else Settings()
        # One connection for every use: an in-memory SQLite database lives as long as it does.
        self.engine: Engine = make_engine("sqlite://", poolclass=StaticPool)
        service.metadata.create_all(self.engine)
        METADATA.create_all(self.engine)  # the engine's own tables

    def run(
        self,
        handler: Callable[..., T],
        event: Event,
        *args: Any,
        saga_id: str,
        event_id: str | None = None,
        recorded: Iterable[Event] = (),
    ) -> T:
        """``handler(event, uow, *args)`` in one transaction, committed; returns what it returned.

        ``recorded``: what this participant published for ``event`` before, as a rebuild hands it.
        ``event_id`` defaults to one per saga and event type. If the handler raises, what it
        wrote is rolled back and the exception propagates (``Rejected``, say)."""
        event_id = event_id if event_id is not None else f"{saga_id}/{type(event).__name__}"
        with self.engine.begin() as conn:
            uow = UnitOfWork(saga_id, event_id, self.service.repository(conn), self.settings, tuple(recorded))
            result: Any = handler(event, uow, *args)
        if isinstance(result, Event):  # a give_up: its failure, with its step filled in as the engine does
            return attributed(result, self.service.name)  # type: ignore[return-value]
        if isinstance(result, (list, tuple)):
            filled = [attributed(e, self.service.name) if isinstance(e, Event) else e for e in result]
            return type(result)(filled)  # type: ignore[return-value]
        return result

    @contextlib.contextmanager
    def records(self) -> Iterator[Any]:
        """The service's repository, to read its state or arrange it before a run: committed on
        leaving the block, rolled back if it raises. Not to be nested in another ``records()``."""
        with self.engine.begin() as conn:
            yield self.service.repository(conn)

    def close(self) -> None:
        """Drop the database."""
        self.engine.dispose()

    def __enter__(self) -> HandlerEnvironment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
