"""Seeing a saga retry, from outside its participants: read-only, for ``pokesaga inspect saga``
and the tracker. (Parking and retrying a record is engine.store.parked's and the loop's business.)

Two sources say a saga is retrying at a participant:

- the participant's own ``parked`` table: ``parked_records(conn, saga_id, …)`` lists the saga's
  parked records there, each with its participant, event type, why it is parked, its attempts
  and the next attempt's time;
- the retry notices the participant publishes on the saga's retries topic (engine.wire.notices):
  ``notice_data(envelope)`` takes one's data as a reader must, since any client can write to
  that topic (engine.observe.timeline checks it against the saga and keeps the latest per participant).

Both read what others wrote (a parked record's value is whatever was on the topic; a notice is
whatever a client published), so both are total and bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from sqlalchemy import Connection, MetaData, select

from engine.events import bounded
from engine.retry import DAY, MAX_ATTEMPTS
from engine.store.db import rebuild_tables
from engine.wire.codec import BadRecord, decode_envelope
from engine.wire.envelope import MAX_TYPE, Envelope
from engine.wire.notices import MAX_ERROR, rfc3339_from_epoch
from engine.wire.text import printable

# A notice claims no more than a retry policy allows (engine.retry.MAX_ATTEMPTS and DAY): the
# reader refuses more attempts, and believes a next attempt no later than MAX_WAIT after it read it.
MAX_WAIT = DAY


class NoticeData(BaseModel):
    """The ``data`` of a retry notice (engine.wire.notices), as a reader takes it: fields of their
    type and bounded (the timeline checks the rest against the saga). Fields a newer producer adds
    are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    participant: Annotated[str, bounded(100, min_length=1)]
    event_type: Annotated[str, bounded(MAX_TYPE, min_length=1)]
    attempt: StrictInt = Field(ge=1, le=MAX_ATTEMPTS)
    maximum_attempts: StrictInt = Field(ge=0, le=MAX_ATTEMPTS)  # 0: unlimited
    next_attempt_at: Annotated[str, bounded(64, min_length=1)]  # RFC 3339, checked by the reader
    error: Annotated[str, bounded(MAX_ERROR)] = ""


def notice_data(envelope: Envelope) -> NoticeData:
    """The notice's data, or BadRecord("invalid_data") naming the first field that is wrong."""
    try:
        return NoticeData.model_validate(envelope.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise BadRecord("invalid_data", f"{envelope.type}: {where}: {first['msg']}") from None
    except Exception as exc:  # anything a hostile document makes pydantic raise
        raise BadRecord("invalid_data", f"{envelope.type}: {type(exc).__name__}") from None


def parked_records(
    conn: Connection, saga_id: str, maximum_attempts: Callable[[str], int | None]
) -> list[dict[str, Any]]:
    """The saga's parked records in this database (every participant of the service), in arrival
    order: participant, the record's event id and type, why it is parked (``retrying``: the head
    of the saga's queue, tried ``attempts`` times; ``waiting``: queued behind it; ``rebuilding``:
    held while the participant rebuilds), its attempts of ``maximum_attempts(participant)``
    (0: unlimited; None: a participant the saga does not declare), the next attempt's time and
    the last error. Every string is bounded and printable."""
    _, parked = rebuild_tables(MetaData())
    query = select(
        parked.c.id, parked.c.consumer, parked.c.event_id, parked.c.topic, parked.c.partition, parked.c.offset,
        parked.c.value, parked.c.reason, parked.c.parked_at, parked.c.attempts, parked.c.due_at, parked.c.last_error,
    ).where(parked.c.saga_id == saga_id).order_by(parked.c.id)  # fmt: skip
    found = []
    for row in conn.execute(query):
        consumer = str(row.consumer)
        found.append(
            {
                "participant": printable(consumer, 100),
                "event_id": printable(str(row.event_id), 200),
                "event_type": _event_type(row.value),
                "reason": printable(str(row.reason), 100),
                "attempts": int(row.attempts or 0),
                "maximum_attempts": maximum_attempts(consumer),
                "next_attempt_at": _time(row.due_at),
                "last_error": None if row.last_error is None else printable(str(row.last_error), MAX_ERROR),
                "parked_at": _time(row.parked_at),
                "topic": printable(str(row.topic), 249),
                "partition": int(row.partition),
                "offset": int(row.offset),
            }
        )
    return found


def _event_type(value: bytes | None) -> str | None:
    """The type a parked record's envelope names, shown safely; None when it has no readable envelope."""
    try:
        return printable(decode_envelope(value).type, MAX_TYPE)
    except BadRecord:
        return None


def _time(epoch: Any) -> str | None:
    if epoch is None:
        return None
    try:
        seconds = float(epoch)
        if not math.isfinite(seconds):
            return None
        return rfc3339_from_epoch(seconds)
    except (OverflowError, ValueError, OSError, TypeError):
        return None


def attempts_text(attempts: int, maximum_attempts: int | None, next_attempt_at: str | None, error: str | None) -> str:
    """``attempt 3 of 5, next attempt at …, last error: …``: the tries that failed so far, of those
    the policy allows (0: ``unlimited``), as ``pokesaga inspect``, ``pokesaga trace`` and the
    tracker's page say it."""
    of = "?" if maximum_attempts is None else "unlimited" if maximum_attempts == 0 else str(maximum_attempts)
    said = f"attempt {attempts} of {of}"
    if next_attempt_at:
        said += f", next attempt at {next_attempt_at}"
    return said + (f", last error: {error}" if error else "")
