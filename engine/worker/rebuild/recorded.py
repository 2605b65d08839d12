"""A rebuild's recorded decisions: what each rebuilding participant published before, read from
the topics in one pass and kept by the id of the event that caused it (engine.worker.history).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from engine.broker import kafka
from engine.broker.unreadable import unreadable_reason
from engine.events import Event
from engine.participant import Participant
from engine.wire.codec import BadRecord, decode_envelope, decode_event
from engine.wire.envelope import Envelope, is_caused_id
from engine.worker.history import CACHE, History
from engine.worker.history import key as history_key

log = logging.getLogger("engine.worker.rebuild")


async def load(
    bootstrap: str,
    participants: list[Participant],
    topics: Iterable[str],
    types: Mapping[str, type[Event]],
    cache: int = CACHE,
) -> dict[str, History]:
    """For each participant (by name), the events it published, by cause id.

    One pass over every saga topic as it is now, however many participants are rebuilt;
    only their own events are parsed and kept: an event of the saga (``types``) with a valid
    body whose id derives from its cause, as a participant publishes it. The first copy of an
    event is the one consumers kept; a later one with the same id is ignored. Each history is
    kept on disk, ``cache`` bounding what it holds in memory (engine.worker.history); close it when done.
    """
    by_source = {p.source: p.name for p in participants}
    found = {p.name: History(cache) for p in participants}
    topics = list(topics)
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
                if envelope is not None:
                    decode_event(envelope, types)
            except BadRecord:
                skipped += 1
                continue
            if envelope is None:
                continue
            if not envelope.causationid or not is_caused_id(envelope):
                skipped += 1  # not as a participant publishes an event
                continue
            own = types[envelope.type]  # where a participant publishes it (or did), keyed with its saga
            if (own.topic in topics and not own.belongs_on(record.topic)) or record.key != envelope.sagaid.encode():
                skipped += 1  # a client's copy elsewhere (a start topic anyone may write) is no decision
                continue
            # A re-publication is the same event: keyed by its id, its first copy is kept. Kept with
            # its saga: a record of another saga naming the same cause is none of this one's.
            at = history_key(envelope.sagaid, envelope.causationid)
            found[by_source[envelope.source]].add(at, envelope.id, value)
    if skipped:
        log.warning("rebuild: skipped %d records on the topics that are not events as the services write them", skipped)
    for name, history in found.items():
        history.loaded()
        log.info("%s: rebuilding: %d recorded decisions loaded from the topics", name, len(history))
    return found


def _published_by(value: bytes, sources: dict[str, str]) -> Envelope | None:
    """The envelope in ``value`` when one of ``sources`` published it, else None; BadRecord when
    ``value`` is no envelope at all (``decode_envelope`` is total: no other exception)."""
    envelope = decode_envelope(value)
    return envelope if envelope.source in sources else None
