"""What becomes of each record of a batch, decided before anything is applied.

In this order:

- it cannot be read, parsed or validated, its event type is not one of the saga's, or it is a
  known event on the wrong topic: **reject** (a dead letter with its reason);
- it is an event of the saga that another participant on the same topic handles: **skip**;
- it was read from the broker before (below its partition's position), or its event id is in the
  inbox (or parked) for the same saga and type: a **duplicate**, nothing changes;
- its event id was applied for another saga, or its saga already had an event of this type
  under another id: **reject** (one saga's ids never silence or replay another's);
- its participant is rebuilding and has no recorded decision for it, or its saga has a record
  parked: **park**, to be applied later, in arrival order (engine.store.parked);
- otherwise: **apply** — or, when its event's version is newer than this instance reads, **hold**
  it (``apply`` with no event and a ``newer_version`` reason: engine.worker.batch.passes parks it
  for an upgraded instance, its saga's later records behind it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from engine import versions
from engine.broker.topicids import Incarnations
from engine.broker.unreadable import unreadable_reason
from engine.events import Event, FailureEvent, out_of_bounds
from engine.store import inbox
from engine.store.parked import REBUILDING, WAITING, ParkedRecord
from engine.wire.codec import BadRecord, decode_envelope, decode_event
from engine.wire.envelope import Envelope, caused_ids
from engine.wire.record import Record
from engine.worker.batch.context import Context
from engine.worker.batch.errors import StartedOver, Unverified
from engine.worker.history import key as history_key

APPLY, PARK, SKIP, DUPLICATE, REJECT = "apply", "park", "skip", "duplicate", "reject"


@dataclass(frozen=True)
class Item:
    """A record and its fate: ``apply``, ``park``, ``skip``, ``duplicate`` or ``reject`` (``reason``)."""

    record: Record
    action: str
    envelope: Envelope | None = None
    event: Event | None = None
    reason: str = ""

    @property
    def marker(self) -> str:
        return inbox.marker(self.record)

    def but(self, action: str, reason: str = "") -> Item:
        """This record with another fate (its envelope and event kept, unless it is refused)."""
        if action == REJECT:
            return Item(self.record, REJECT, reason=reason)
        return Item(self.record, action, self.envelope, self.event, reason)


def behind(fresh: Sequence[Record], known: dict[tuple[str, int], inbox.Position], topics: Incarnations) -> set[int]:
    """The records (their ``id()``) read from the broker before: below their partition's position,
    on the same incarnation of the topic (engine.store.inbox). ``StartedOver`` when a partition's
    position was recorded on a topic since made again; ``Unverified`` when a record below its
    position was fetched after its topic's id was last read (the topic may be new since)."""
    ids = topics.ids
    started_over = {
        (r.topic, r.partition): ids[r.topic]
        for r in fresh
        if inbox.void(known.get((r.topic, r.partition)), ids.get(r.topic))
    }
    if started_over:
        raise StartedOver(started_over)
    below = [r for r in fresh if (at := known.get((r.topic, r.partition))) is not None and r.offset < at[0]]
    unverified = {r.topic for r in below if not topics.verified(r.topic)}
    if unverified:
        raise Unverified(unverified)
    return {id(r) for r in below}


def decode(ctx: Context, record: Record) -> Item:
    """The record read: ``apply`` for this participant, ``skip`` for another, else ``reject``."""
    unreadable = unreadable_reason(record.headers)
    if unreadable is not None:
        return Item(record, REJECT, reason=f"unreadable: {unreadable}")
    try:
        envelope = decode_envelope(record.value)
        known = ctx.types.get(envelope.type)
        if known is None:
            return Item(record, REJECT, reason=f"unknown_type: {envelope.type!r} is no event of the saga")
        handled = envelope.type in ctx.participant.handlers
        # An event this participant handles, on another event's topic of the saga: refused too, since
        # each topic has its own writers (the ACLs), and one may not pass for another that way.
        if not known.belongs_on(record.topic) and (not handled or record.topic in ctx.topics):
            return Item(record, REJECT, reason=f"wrong_topic: {envelope.type} belongs on {known.topic}")
        if not handled:
            return Item(record, SKIP)  # another participant on this topic handles it
        too_new = versions.newer(known, envelope.dataversion)
        if too_new is not None:
            return Item(record, APPLY, envelope, None, too_new)  # held, not misread (Pass.hold)
        event = decode_event(envelope, ctx.types)
        wrong = out_of_bounds(event, ctx.participant.steps) if isinstance(event, FailureEvent) else None
        if wrong is not None and ctx.participant.steps:
            return Item(record, REJECT, reason=f"invalid_data: {envelope.type}: {wrong}")
        return Item(record, APPLY, envelope, event)
    except BadRecord as bad:
        return Item(record, REJECT, reason=bad.reason)


def plan(ctx: Context, conn: Connection, items: list[Item]) -> list[Item]:
    """Turn ``apply`` into ``duplicate``, ``reject`` or ``park`` where the inbox says so, in batch order."""
    envelopes = [item.envelope for item in items if item.envelope is not None]
    seen: dict[str, tuple[str, str]] = {}  # event id -> (saga id, type), applied or parked
    started: dict[tuple[str, str], str] = {}  # (saga id, type) -> event id
    parked_sagas: set[str] = set()  # sagas with a record parked: later ones wait behind it
    unparking = {item.envelope.id for item in items if item.envelope and isinstance(item.record, ParkedRecord)}
    if envelopes:
        ctx.history.prefetch(history_key(e.sagaid, e.id) for e in envelopes)  # the batch's decisions, in one read
        found = ctx.inbox.applied(conn, (e.id for e in envelopes), (e.sagaid for e in envelopes))
        held = [event_id for event_id, _, type_ in found if type_ == inbox.PARKED and event_id not in unparking]
        held_types = ctx.parked.types(conn, held) if held else {}
        for event_id, saga_id, type_ in found:
            if type_ == inbox.PARKED:
                if event_id in unparking:
                    continue
                parked_sagas.add(saga_id)  # a record parked is at the head of its saga's queue
                type_ = held_types.get(event_id, type_)  # as good as applied: a copy is refused
            seen[event_id] = (saga_id, type_)
            if type_ != inbox.DEAD_LETTER:
                started[(saga_id, type_)] = event_id
    planned = []
    for item in items:
        envelope = item.envelope
        if item.action == APPLY and envelope is not None:
            this = (envelope.sagaid, envelope.type)
            before = seen.get(envelope.id)
            first = started.get(this, envelope.id)
            if before == this:
                item = item.but(DUPLICATE)
            elif before is not None:
                said = f"was applied for saga {before[0]!r} ({before[1]}); this record is for saga {envelope.sagaid!r}"
                item = item.but(REJECT, f"event_id_reused: event id {envelope.id!r} {said}")
            elif first != envelope.id and same_event(envelope, first):
                item = item.but(DUPLICATE)  # published again across an upgrade of the ids
            elif first != envelope.id:
                said = f"already had its {envelope.type}, event id {first!r}; this copy has id {envelope.id!r}"
                item = item.but(REJECT, f"conflicting_copy: saga {envelope.sagaid!r} {said}")
            else:
                if not isinstance(item.record, ParkedRecord) and (
                    envelope.sagaid in parked_sagas or (ctx.rebuilding and not ctx.recorded(envelope))
                ):
                    item = item.but(PARK, WAITING if envelope.sagaid in parked_sagas else REBUILDING)
                    parked_sagas.add(envelope.sagaid)
                seen[envelope.id] = this
                started[this] = envelope.id
        planned.append(item)
    return already_dead(ctx, conn, planned)


def already_dead(ctx: Context, conn: Connection, items: list[Item]) -> list[Item]:
    """A rejected record already dead-lettered (a replay) is a duplicate, not a second dead letter."""
    markers = {item.marker for item in items if item.action == REJECT}
    if not markers:
        return items
    dead = {event_id for event_id, _, type_ in ctx.inbox.applied(conn, markers) if type_ == inbox.DEAD_LETTER}
    return [i.but(DUPLICATE) if i.action == REJECT and i.marker in dead else i for i in items]


def same_event(envelope: Envelope, other_id: str) -> bool:
    """Are ``envelope`` and the event of id ``other_id`` (same saga, same type) one event, its id
    derived from the same cause once with the saga id and once the way it was before?"""
    cause = envelope.causationid
    return cause is not None and {envelope.id, other_id} == set(caused_ids(envelope.sagaid, cause, envelope.type))
