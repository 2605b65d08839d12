"""Topic names of the capture saga. Every record's key is the saga id."""

from __future__ import annotations

from engine.wire.deadletter import DLQ_SUFFIX, dead_letters  # the engine names dead-letter topics

__all__ = ["ALL", "COMBAT", "DELIVERY", "DLQ_SUFFIX", "FAILURES", "OUTCOMES", "POKEBALL", "STATUS", "dead_letters"]

STATUS = "capture.status"
COMBAT = "capture.combat"
POKEBALL = "capture.pokeball"
DELIVERY = "capture.delivery"
OUTCOMES = "capture.outcomes"
FAILURES = "capture.failures"

ALL: tuple[str, ...] = (STATUS, COMBAT, POKEBALL, DELIVERY, OUTCOMES, FAILURES)
