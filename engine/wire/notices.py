"""Retry notices: what a participant says when it parks a record to try it again (engine.store.parked),
on its saga's retry notices' topic (``Saga.retries_topic``: ``capture.retries``). An observer (the
tracker) shows the saga as retrying, attempt n of m, next attempt at; a later event of the saga
from that participant supersedes it.

A notice is informational, never a command: no participant consumes the topic. It is written to
the outbox in the transaction that parks the record, so it is published once the record is
parked, and a re-published copy carries the same id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.wire.envelope import DATA_VERSION, Envelope, caused_id

TYPE = "pokesaga.StepRetrying"
MAX_ERROR = 500  # what a participant keeps of an error: the parked table's column, a notice's field


def notice(
    cause: Envelope,
    *,
    participant: str,
    source: str,
    attempt: int,
    maximum_attempts: int,
    next_attempt_at: float,
    error: str,
) -> Envelope:
    """The notice that ``participant`` failed ``cause`` ``attempt`` times and tries again at ``next_attempt_at``."""
    data: dict[str, Any] = {
        "participant": participant,
        "event_type": cause.type,
        "attempt": attempt,
        "maximum_attempts": maximum_attempts,
        "next_attempt_at": rfc3339_from_epoch(next_attempt_at),
        "error": error[:MAX_ERROR],
    }
    return Envelope(
        specversion="1.0",
        id=caused_id(cause.sagaid, cause.id, "retrying", participant, str(attempt)),
        source=source,
        type=TYPE,
        time=datetime.now(UTC),
        subject=cause.sagaid,
        sagaid=cause.sagaid,
        causationid=cause.id,
        dataversion=DATA_VERSION,
        data=data,
    )


def rfc3339_from_epoch(epoch: float) -> str:
    """``epoch`` (seconds) as a notice writes a time: ``2026-11-23T20:40:01.250000Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
