"""Retry policy, with the fields Temporal users know (a value, like ``temporalio.common.RetryPolicy``).

Every exception a handler raises is retryable unless its type is named in
``non_retryable_error_types``. Attempts are spaced by ``initial_interval``, multiplied by
``backoff_coefficient`` after each, capped at ``maximum_interval``; ``maximum_attempts``
counts the first try too, and 0 means no limit.
"""

from __future__ import annotations

from collections.abc import Iterator

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
