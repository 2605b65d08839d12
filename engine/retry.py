"""Retry policy and fault injection, with the fields Temporal users know.

Every exception a handler raises is retryable unless its type is named in
``non_retryable_error_types``. Attempts are spaced by ``initial_interval``, multiplied by
``backoff_coefficient`` after each, capped at ``maximum_interval``; ``maximum_attempts``
counts the first try too, and 0 means no limit.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    initial_interval: float = Field(default=0.05, gt=0, description="Seconds before the first retry.")
    backoff_coefficient: float = Field(default=2.0, ge=1)
    maximum_interval: float = Field(default=2.0, gt=0)
    maximum_attempts: int = Field(default=5, ge=0, description="0: unlimited.")
    non_retryable_error_types: tuple[str, ...] = ()

    def delays(self) -> Iterator[float]:
        """The wait before each retry; ends when the attempts are used up."""
        delay, attempt = self.initial_interval, 1
        while self.maximum_attempts == 0 or attempt < self.maximum_attempts:
            yield min(delay, self.maximum_interval)
            delay *= self.backoff_coefficient
            attempt += 1

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
    """A compensation never gives up on a transient error; the database refusing the change is final."""

    maximum_attempts: int = Field(default=0, ge=0, description="0: unlimited.")
    non_retryable_error_types: tuple[str, ...] = ("IntegrityError", "DataError", "ProgrammingError")


class TransientFault(Exception):
    """An injected transient error (``POKESAGA_FAULTS``): it goes away when retried."""


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


class FaultInjector:
    """Raises TransientFault with the configured probability for a participant."""

    def __init__(self, spec: str | None, participant: str, rng: random.Random | None = None) -> None:
        faults = parse_faults(spec)
        self.probability = faults.get(participant, faults.get("*", 0.0))
        self.rng = rng or random.Random()

    def maybe_fail(self) -> None:
        if self.probability and self.rng.random() < self.probability:
            raise TransientFault("injected transient fault")
