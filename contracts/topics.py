"""Topic names of the capture saga. Every record's key is the saga id."""

from __future__ import annotations

from engine.wire.deadletter import DLQ_SUFFIX, dead_letters  # the engine names dead-letter topics

__all__ = [
    "ALL",
    "COMBAT",
    "COMBAT_FAILURES",
    "DELIVERY",
    "DELIVERY_FAILURES",
    "DLQ_SUFFIX",
    "FAILURES",
    "OUTCOMES",
    "POKEBALL",
    "POKEBALL_FAILURES",
    "STATUS",
    "STATUS_FAILURES",
    "dead_letters",
]

STATUS = "capture.status"
COMBAT = "capture.combat"
POKEBALL = "capture.pokeball"
DELIVERY = "capture.delivery"
OUTCOMES = "capture.outcomes"
# Each service's failure events on a topic of its own, so the brokers' ACLs let only that service
# write them: a service cannot forge another's failure and unwind a saga with it.
STATUS_FAILURES = "capture.failures.status"
COMBAT_FAILURES = "capture.failures.combat"
POKEBALL_FAILURES = "capture.failures.pokeball"
DELIVERY_FAILURES = "capture.failures.delivery"
# Where every failure went before they had a topic each: still read, written by no one.
FAILURES = "capture.failures"

ALL: tuple[str, ...] = (
    STATUS,
    COMBAT,
    POKEBALL,
    DELIVERY,
    OUTCOMES,
    STATUS_FAILURES,
    COMBAT_FAILURES,
    POKEBALL_FAILURES,
    DELIVERY_FAILURES,
    FAILURES,
)
