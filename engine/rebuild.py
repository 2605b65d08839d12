"""A participant's history: the events it published before, read back from the topics.

When a service's database is lost, replaying its input topics rebuilds the state, but the
order in which partitions interleave may differ from the first time, and a decision that
depends on state shared across sagas (a stock, a capacity) could come out otherwise. So a service
whose database is new first loads what it published before, indexed by the id of the
event that caused it, and a handler with a recorded decision takes that decision again
instead of deciding anew: the rebuilt state and the re-published events are the same.

Any client can write anything to the topics: a record that is not an envelope the services
take (any bytes, JSON nested thousands of levels deep, a record the client cannot read as
written) is skipped, and the count of them logged; it never stops a rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable

from aiokafka.errors import KafkaError

from engine import kafka
from engine.codec import BadRecord, decode_envelope
from engine.envelope import Envelope
from engine.participant import Participant
from engine.unreadable import unreadable_reason

log = logging.getLogger(__name__)

History = dict[str, list[Envelope]]


async def load(bootstrap: str, participants: list[Participant], topics: Iterable[str]) -> dict[str, History]:
    """For each participant (by name), the events it published, by cause id.

    One pass over every saga topic as it is now, however many participants are rebuilt;
    only their own events are parsed and kept.
    """
    by_source = {p.source: p.name for p in participants}
    found: dict[str, defaultdict[str, dict[str, Envelope]]] = {p.name: defaultdict(dict) for p in participants}
    skipped = 0
    if participants:
        marks = tuple(source.encode() for source in by_source)
        async for record in kafka.scan_to_end(bootstrap, topics):
            value = record.value or b""
            if not any(mark in value for mark in marks):  # cheap: most records are other services'
                continue
            if unreadable_reason(record.headers) is not None:  # not as a service wrote it
                skipped += 1
                continue
            try:
                envelope = _published_by(value, by_source)
            except BadRecord:
                skipped += 1
                continue
            if envelope is not None and envelope.causationid:
                # A re-publication is the same event: keyed by its id, it is kept once.
                found[by_source[envelope.source]][envelope.causationid][envelope.id] = envelope
    if skipped:
        log.warning("rebuild: skipped %d records on the topics that are not events as the services write them", skipped)
    for name, history in found.items():
        log.info("%s: new database: %d recorded decisions loaded from the topics", name, len(history))
    return {name: {cause: list(events.values()) for cause, events in h.items()} for name, h in found.items()}


def _published_by(value: bytes, sources: dict[str, str]) -> Envelope | None:
    """The envelope in ``value`` when one of ``sources`` published it, else None; BadRecord when
    ``value`` is no envelope at all (``decode_envelope`` is total: no other exception)."""
    envelope = decode_envelope(value)
    return envelope if envelope.source in sources else None


async def step_caught_up(bootstrap: str, name: str, step: Participant, stop: asyncio.Event) -> bool:
    """Wait until ``step`` has committed up to where its topics end now; False if stopped first.

    In a rebuild a step and its compensator replay the same history independently. A
    compensation replayed before the step it undoes would find nothing to undo, so the
    compensator starts only once its step has caught up. (The step does not need the
    compensator: it takes its recorded decisions.)
    """
    targets = await kafka.end_offsets(bootstrap, step.topics)
    log.info("%s: rebuilding: waiting for %s to replay up to %s", name, step.name, targets)
    while not stop.is_set():
        try:
            committed = await kafka.committed_offsets(bootstrap, step.name, targets)
        except KafkaError as exc:  # e.g. a new broker has no group coordinator yet
            log.info("%s: rebuilding: %s; asking again", name, exc)
            committed = {}
        if all(committed.get(tp, 0) >= end for tp, end in targets.items()):
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return False
