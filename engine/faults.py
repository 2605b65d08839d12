"""Faults on purpose, off by default: named crash points of the participant loop
(``POKESAGA_CRASH_AT``) and injected handler failures and stalls (``POKESAGA_FAULTS``,
``POKESAGA_STALL``).

Tests set them to prove that a hard crash in any window, a flaky handler or a stalled one loses
and duplicates nothing, and the demo shows what the failure paths look like.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

AFTER_LOCAL_COMMIT = "after-local-commit"  # state committed, nothing published
AFTER_PUBLISH = "after-publish"  # published, offsets not yet committed, outbox rows not yet deleted
AFTER_OFFSET_COMMIT = "after-offset-commit"  # offsets committed, outbox rows published not yet deleted
POINTS = (AFTER_LOCAL_COMMIT, AFTER_PUBLISH, AFTER_OFFSET_COMMIT)

log = logging.getLogger(__name__)


def check(configured: str | None, point: str) -> None:
    """Kill this process at once, no clean-up, if ``point`` is the configured crash point."""
    if configured == point:
        log.critical("crash point %s reached: exiting hard", point)
        os._exit(137)


class TransientFault(Exception):
    """An injected transient error (``POKESAGA_FAULTS``, ``POKESAGA_STALL``): it goes away when retried."""


def parse_faults(spec: str | None) -> dict[str, float]:
    """``"0.3"`` → every participant; ``"status=0.3,pokeball.compensations=0.1"`` → those."""
    if not spec:
        return {}
    faults: dict[str, float] = {}
    for part in spec.split(","):
        name, _, value = part.strip().rpartition("=")
        probability = float(value)
        if not 0 <= probability <= 1:
            raise ValueError(f"fault probability must be within 0..1, got {value}")
        faults[name or "*"] = probability
    return faults


STALL_FORMAT = "expected PARTICIPANT=SAGA_ID_PREFIX:SECONDS, e.g. combat=stall-:10"


@dataclass(frozen=True)
class Stall:
    """A participant's handler fails for ``seconds`` after its first attempt at a saga whose id
    starts with ``prefix``, then succeeds: one saga's step stuck on a transient error."""

    prefix: str
    seconds: float

    def matches(self, saga_id: str) -> bool:
        return saga_id.startswith(self.prefix)


def parse_stall(spec: str | None) -> dict[str, Stall]:
    """``"combat=stall-:10"`` → combat's handler fails for 10 s at each saga whose id starts
    with ``stall-``. Several participants: ``"combat=stall-:10,delivery=slow-:2.5"``."""
    if not spec or not spec.strip():
        return {}
    stalls: dict[str, Stall] = {}
    for part in spec.split(","):
        participant, equals, rest = part.strip().partition("=")
        prefix, colon, seconds = rest.rpartition(":")
        if not participant or not equals or not colon:
            raise ValueError(f"{STALL_FORMAT}; got {part.strip()!r}")
        try:
            duration = float(seconds)
        except ValueError:
            raise ValueError(f"seconds must be a number, got {seconds!r} ({STALL_FORMAT})") from None
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"seconds must be above 0, got {seconds!r} ({STALL_FORMAT})")
        if participant in stalls:
            raise ValueError(f"participant {participant!r} is named twice")
        stalls[participant] = Stall(prefix, duration)
    return stalls


class FaultInjector:
    """Raises TransientFault with the configured probability for a participant (``spec``:
    ``POKESAGA_FAULTS``), and for a stalled saga until its stall is over (``stall``:
    ``POKESAGA_STALL``; measured from this process's first attempt at that saga)."""

    def __init__(
        self,
        spec: str | None,
        participant: str,
        rng: random.Random | None = None,
        *,
        stall: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        faults = parse_faults(spec)
        self.probability = faults.get(participant, faults.get("*", 0.0))
        self.rng = rng or random.Random()
        self.stall = parse_stall(stall).get(participant)
        self.clock = clock
        self.first_attempt: dict[str, float] = {}  # stalled saga id → when this process first tried it

    def maybe_fail(self, saga_id: str | None = None) -> None:
        """Raise TransientFault if a fault is due for this attempt (at ``saga_id``, when known)."""
        if saga_id is not None and self.stall is not None and self.stall.matches(saga_id):
            now = self.clock()
            first = self.first_attempt.setdefault(saga_id, now)
            if now - first < self.stall.seconds:
                raise TransientFault(f"injected stall: {now - first:.1f}s of {self.stall.seconds:g}s")
        if self.probability and self.rng.random() < self.probability:
            raise TransientFault("injected transient fault")
