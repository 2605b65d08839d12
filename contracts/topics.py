"""Topic names of the capture saga. Every record's key is the saga id."""

from __future__ import annotations

STATUS = "capture.status"
COMBAT = "capture.combat"
POKEBALL = "capture.pokeball"
DELIVERY = "capture.delivery"
OUTCOMES = "capture.outcomes"
FAILURES = "capture.failures"

ALL: tuple[str, ...] = (STATUS, COMBAT, POKEBALL, DELIVERY, OUTCOMES, FAILURES)
DLQ_SUFFIX = ".dlq"


def dead_letters(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return topic + DLQ_SUFFIX
