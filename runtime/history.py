"""A participant's history: the events it published before, read back from the topics.

When a service's database is lost, replaying its input topics rebuilds the state, but the
order in which partitions interleave may differ from the first time, and two decisions
depend on state shared across sagas (a trainer's bag, a trainer's party). So a service
whose database is new first loads what it published before, indexed by the id of the
event that caused it, and a handler with a recorded decision takes that decision again
instead of deciding anew: the rebuilt state and the re-published events are the same.

Any client can write anything to the topics: a record that is not an envelope the services
take (any bytes, JSON nested thousands of levels deep, a record the client cannot read as
written) is skipped, and the count of them logged; it never stops a rebuild.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from contracts import topics
from contracts.envelope import Envelope
from runtime import kafka
from runtime.codec import BadRecord, decode_envelope
from runtime.participant import Participant
from runtime.unreadable import unreadable_reason

log = logging.getLogger(__name__)

History = dict[str, list[Envelope]]


async def load(bootstrap: str, participants: list[Participant]) -> dict[str, History]:
    """For each participant (by name), the events it published, by cause id.

    One pass over every saga topic as it is now, however many participants are rebuilt;
    only their own events are parsed and kept.
    """
    by_source = {p.source: p.name for p in participants}
    found: dict[str, defaultdict[str, dict[str, Envelope]]] = {p.name: defaultdict(dict) for p in participants}
    skipped = 0
    if participants:
        marks = tuple(source.encode() for source in by_source)
        async for record in kafka.scan_to_end(bootstrap, topics.ALL):
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
