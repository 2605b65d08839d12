"""What every pass of a participant's batches shares: its tables, its policy, its history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC

from sqlalchemy import Connection, Engine

from engine import versions
from engine.events import Event
from engine.faults import FaultInjector
from engine.participant import Participant
from engine.settings import Settings
from engine.store.db import messaging_tables, positions_table, rebuild_tables
from engine.store.inbox import Inbox
from engine.store.outbox import Outbox
from engine.store.parked import Parked
from engine.wire.envelope import Envelope
from engine.worker.history import key as history_key
from engine.worker.rebuild import History


class Context:
    """One participant's side of its database, and what decides for it: the batch's surroundings."""

    def __init__(
        self,
        participant: Participant,
        types: Mapping[str, type[Event]],
        engine: Engine,
        settings: Settings,
        history: History | Mapping[str, Sequence[Envelope]] | None = None,
    ) -> None:
        self.participant = participant
        self.name = participant.name
        self.types = types  # every event of the saga, by type name
        # The saga's topics: each carries only the events declared on it (or once on it).
        self.topics = frozenset(topic for cls in types.values() for topic in cls.read_from())
        self.engine = engine
        self.settings = settings
        versions.check_pins(settings.publish_versions, types, "POKESAGA_PUBLISH_VERSIONS")
        self.pins = settings.publish_versions  # events published at an older version (engine.versions)
        # Rebuilding (engine.worker.rebuild): what it published before, by cause id. Only records with a
        # recorded decision are applied; the others are parked until the rebuild ends. The history
        # is on disk, a batch's read at a time (engine.worker.history).
        self.rebuilding = history is not None
        self.history = History.of(history if history is not None else {})
        inbox_table, outbox_table = messaging_tables(participant.metadata)
        self.rebuild_table, parked_table = rebuild_tables(participant.metadata)
        self.inbox = Inbox(inbox_table, participant.name, parked_table, positions_table(participant.metadata))
        self.outbox = Outbox(outbox_table, participant.name)
        self.policy = settings.retry_policy(participant.name, participant.compensator)
        horizon = max(self.policy.maximum_interval, settings.newer_version_wait(64))
        self.parked = Parked(parked_table, participant.name, horizon)
        self.faults = FaultInjector(settings.faults, participant.name, stall=settings.stall)
        # Outbox rows published and acknowledged, not yet deleted: the next transaction deletes them
        # (engine.worker.batch.transaction), or the loop when it has nothing else to do.
        self.sent: set[int] = set()

    def delete_sent(self, conn: Connection) -> list[int]:
        """The rows published and acknowledged since the last transaction, deleted in ``conn``'s: the
        ids to take out of ``sent`` once it has committed (a crash before the commit publishes them
        again, and consumers drop the copy)."""
        sent = list(self.sent)
        self.outbox.delete(conn, sent)
        return sent

    def recorded(self, cause: Envelope) -> list[Envelope]:
        """What this participant published for ``cause`` before (rebuilding): its recorded decision."""
        if self.history.empty:  # not rebuilding: the common case, at no cost
            return []
        return [e for e in self.history.get(history_key(cause.sagaid, cause.id), ()) if e.sagaid == cause.sagaid]

    def deadline(self, envelope: Envelope) -> float | None:
        """The saga's deadline (epoch seconds) for a forward step; None for a compensation, for a
        record with a recorded decision (a rebuild re-applies what was decided in time), or none set."""
        if self.participant.compensator or envelope.sagadeadline is None or self.recorded(envelope):
            return None
        deadline = envelope.sagadeadline
        if deadline.tzinfo is None:  # a client's time without an offset: UTC, as CloudEvents' time
            deadline = deadline.replace(tzinfo=UTC)
        return deadline.timestamp()
