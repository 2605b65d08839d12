"""A participant's history: the events it published before, read back from the topics.

When a service's database is lost, replaying its input topics rebuilds the state, but the
order in which partitions interleave may differ from the first time, and two decisions
depend on state shared across sagas (a trainer's bag, a trainer's party). So a service
whose database is new first loads what it published before, indexed by the id of the
event that caused it, and a handler with a recorded decision takes that decision again
instead of deciding anew: the rebuilt state and the re-published events are the same.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict

from aiokafka import TopicPartition

from contracts import topics
from contracts.envelope import Envelope
from runtime import kafka
from runtime.participant import Participant

log = logging.getLogger(__name__)

History = dict[str, list[Envelope]]


async def load(bootstrap: str, participant: Participant) -> History:
    """Events ``participant`` published, by cause id, from every saga topic as it is now."""
    history: defaultdict[str, dict[str, Envelope]] = defaultdict(dict)
    tps = [TopicPartition(t, p) for t in topics.ALL for p in await kafka.partition_ids(bootstrap, t)]
    consumer = kafka.consumer(bootstrap, None)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    envelope = _ours(record.value, participant.source)
                    if envelope is not None and envelope.causationid:
                        history[envelope.causationid][envelope.id] = envelope  # a re-publication is one event
    finally:
        await consumer.stop()
    log.info("%s: new database: %d recorded decisions loaded from the topics", participant.name, len(history))
    return {cause: list(events.values()) for cause, events in history.items()}


def _ours(value: bytes | None, source: str) -> Envelope | None:
    try:
        doc = json.loads(value or b"")
        if not isinstance(doc, dict) or doc.get("source") != source:
            return None
        return Envelope.model_validate(doc)
    except ValueError:
        return None
