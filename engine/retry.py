"""Retry policy and fault injection, with the fields Temporal users know.

Every exception a handler raises is retryable unless its type is named in
``non_retryable_error_types``. Attempts are spaced by ``initial_interval``, multiplied by
``backoff_coefficient`` after each, capped at ``maximum_interval``; ``maximum_attempts``
counts the first try too, and 0 means no limit.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

DAY = 86_400.0  # the longest wait a policy may ask for
MAX_ATTEMPTS = 10**9  # beyond any policy (0 is unlimited)


class RetryPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    initial_interval: float = Field(default=0.05, gt=0, le=DAY, description="Seconds before the first retry.")
    backoff_coefficient: float = Field(default=2.0, ge=1, le=1000)
    maximum_interval: float = Field(default=2.0, gt=0, le=DAY, description="The longest wait: at most a day.")
    maximum_attempts: int = Field(default=5, ge=0, le=MAX_ATTEMPTS, description="0: unlimited.")
    non_retryable_error_types: tuple[str, ...] = ()

    def delays(self) -> Iterator[float]:
        """The wait before each retry (``delay_after`` each failed try); ends when the attempts are used up."""
        attempts = 1
        while (delay := self.delay_after(attempts)) is not None:
            yield delay
            attempts += 1

    def delay_after(self, attempts: int) -> float | None:
        """The wait after ``attempts`` failed tries before the next; None when they are used up."""
        if self.maximum_attempts and attempts >= self.maximum_attempts:
            return None
        try:
            delay = self.initial_interval * self.backoff_coefficient ** max(attempts - 1, 0)
        except OverflowError:  # a long outage, a steep coefficient
            return self.maximum_interval
        return min(delay, self.maximum_interval)

    def retryable(self, error: BaseException) -> bool:
        names = {cls.__name__ for cls in type(error).__mro__} | {f"{type(error).__module__}.{type(error).__name__}"}
        return not names & set(self.non_retryable_error_types)


class CompensationRetryPolicy(RetryPolicy):
    """A compensation's retries: the database refusing the change is final. Its attempts are
    ``Settings.compensation_attempts`` (``POKESAGA_COMPENSATION_ATTEMPTS``): a compensation still
    failing then is dead-lettered and its saga shown as needing an operator, never retried for ever."""

    maximum_attempts: int = Field(default=20, ge=1, le=MAX_ATTEMPTS, description="Set by compensation_attempts.")
    non_retryable_error_types: tuple[str, ...] = ("IntegrityError", "DataError", "ProgrammingError")


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
