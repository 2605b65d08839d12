"""Reading a record as a timeline entry: a saga event, a retry notice, or a dead letter, placed
only if the services would take it (the same envelope and event rules, the event's own topic, a
record the client could read); anything else is ``NotAnEvent`` with a reason from ``REASONS``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from engine.broker.unreadable import unreadable_reason
from engine.observe.retries import notice_data
from engine.observe.timeline.fields import (
    CONTROL,
    MAX_DEAD_REASON,
    MAX_ID,
    MAX_NAME,
    MAX_SERVICE,
    MAX_TOPIC,
    MAX_TYPE,
    NotAnEvent,
    bad_saga_id,
    bounded_text,
    coordinates,
    failure_details,
    finite_seconds,
    header_pairs,
    trace_id,
)
from engine.observe.timeline.shape import SagaShape
from engine.observe.timeline.times import canonical_rfc3339
from engine.wire.codec import BadRecord, TooNew, decode_envelope, decode_event
from engine.wire.deadletter import DLQ_HEADER_PREFIX, DLQ_SUFFIX
from engine.wire.envelope import Envelope
from engine.wire.notices import MAX_ERROR, rfc3339_from_epoch
from engine.wire.notices import TYPE as NOTICE


class Reading(SagaShape):
    """The timeline entry of one record of the saga's topics, or ``NotAnEvent``."""

    def parse(
        self, value: bytes | None, topic: str, headers: Any = None, partition: Any = None, offset: Any = None
    ) -> dict[str, Any]:
        """The timeline entry of one record, or NotAnEvent; ``headers`` as the Kafka client gives them,
        ``partition`` and ``offset`` where the record is (kept, to read it again from the broker)."""
        unreadable = unreadable_reason(header_pairs(headers))
        if unreadable is not None:
            raise NotAnEvent("unreadable", unreadable)
        if not value:
            raise NotAnEvent("empty", "the record has no value")
        try:
            envelope = decode_envelope(value)
            if bad_saga_id(envelope.sagaid) is not None:  # one no request can name, nor the changelog hold
                raise NotAnEvent("invalid_data", f"saga id: {bad_saga_id(envelope.sagaid)}")
            if envelope.type == NOTICE:
                return self._notice(envelope, topic)
            known = self.types.get(envelope.type)
            if known is None:
                raise NotAnEvent("unknown_type", f"{envelope.type[:MAX_TYPE]!r} is no event of the saga")
            if not known.belongs_on(topic):
                raise NotAnEvent("wrong_topic", f"{envelope.type} belongs on {known.topic}")
            with contextlib.suppress(TooNew):  # a newer producer's: shown, though this reader cannot check it
                decode_event(envelope, self.types)
        except BadRecord as bad:
            raise NotAnEvent(bad.kind, bad.reason) from None
        data = envelope.data
        entry: dict[str, Any] = {
            "id": bounded_text(envelope.id, MAX_ID),
            "type": envelope.type,
            "saga_id": bounded_text(envelope.sagaid, MAX_ID),
            "service": bounded_text(envelope.source.removeprefix(self.source_prefix), MAX_SERVICE) or "",
            "topic": bounded_text(topic, MAX_TOPIC) or "",
            "time": canonical_rfc3339(envelope.time),
            "causation": bounded_text(envelope.causationid, MAX_ID),
        }
        entry.update(coordinates(partition, offset))
        trace = trace_id(headers)
        if trace is not None:
            entry["trace_id"] = trace
        entry.update(failure_details(data))
        if envelope.type == self.start:
            shown = self.summary(data)
            entry.update({field: bounded_text(shown.get(field), MAX_NAME) for field in self.summary_fields})
        return entry

    def _notice(self, envelope: Envelope, topic: str) -> dict[str, Any]:
        """The entry of a retry notice: only one a participant of the saga could have written,
        about an event it handles, on the saga's retries topic."""
        if topic != self.retries_topic:
            raise NotAnEvent("wrong_topic", f"{NOTICE} belongs on {self.retries_topic}")
        data = notice_data(envelope)
        if self.next.get(data.event_type) != data.participant:
            raise NotAnEvent(
                "invalid_data", f"{NOTICE}: {data.participant[:MAX_NAME]!r} handles no {data.event_type[:MAX_NAME]!r}"
            )
        if envelope.causationid is None:
            raise NotAnEvent("invalid_data", f"{NOTICE}: no causationid (the record being retried)")
        if data.maximum_attempts and data.attempt > data.maximum_attempts:
            raise NotAnEvent("invalid_data", f"{NOTICE}: attempt {data.attempt} of {data.maximum_attempts}")
        next_attempt_at = canonical_rfc3339(data.next_attempt_at)
        if next_attempt_at is None:
            raise NotAnEvent("invalid_data", f"{NOTICE}: next_attempt_at is not an RFC 3339 date-time")
        return {
            "id": bounded_text(envelope.id, MAX_ID),
            "type": NOTICE,
            "saga_id": bounded_text(envelope.sagaid, MAX_ID),
            "topic": bounded_text(topic, MAX_TOPIC) or "",
            "time": canonical_rfc3339(envelope.time),
            "causation": bounded_text(envelope.causationid, MAX_ID),
            "participant": data.participant,
            "event_type": data.event_type,
            "attempt": data.attempt,
            "maximum_attempts": data.maximum_attempts,
            "next_attempt_at": next_attempt_at,
            "error": bounded_text(data.error, MAX_ERROR) or "",
        }

    def parse_dead_letter(
        self, key: bytes | None, topic: str, headers: Any, partition: Any, offset: Any, timestamp_ms: Any
    ) -> dict[str, Any]:
        """The entry of a record on a dead-letter topic of the saga: where it is, why it is there,
        and the saga it is about (its key); NotAnEvent when its key is no saga id."""
        source = topic.removesuffix(DLQ_SUFFIX)
        if not topic.endswith(DLQ_SUFFIX) or source not in self.consumed:
            raise NotAnEvent("wrong_topic", f"{topic[:MAX_TOPIC]!r} is no dead-letter topic of the saga")
        pairs = header_pairs(headers)
        if unreadable_reason(pairs) is not None or key is None:
            raise NotAnEvent("unreadable", "a dead letter with no key, or headers that are not UTF-8")
        try:
            saga_id = key.decode("utf-8")
        except UnicodeDecodeError:
            raise NotAnEvent("unreadable", "a dead letter whose key is not UTF-8") from None
        if bad_saga_id(saga_id) is not None:
            raise NotAnEvent("invalid_data", "a dead letter whose key is no saga id")
        ours = {k: v for k, v in pairs if isinstance(k, str) and k.startswith(DLQ_HEADER_PREFIX)}

        def header(name: str, limit: int) -> str:
            value = ours.get(DLQ_HEADER_PREFIX + name)
            return CONTROL.sub(" ", value.decode("utf-8", "replace"))[:limit] if isinstance(value, bytes) else ""

        seconds = finite_seconds(timestamp_ms) / 1000
        return {
            "saga_id": saga_id,
            "topic": topic,
            "source": source,
            **coordinates(partition, offset),
            "reason": header("reason", MAX_DEAD_REASON) or "(no reason recorded)",
            "consumer": header("consumer", MAX_SERVICE),
            "time": rfc3339_from_epoch(seconds) if seconds else None,
        }
