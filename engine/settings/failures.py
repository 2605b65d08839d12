"""Settings for failures: how a failing record is retried (every step's policy, per-step
overrides, the compensators' policy and attempts) and the faults a test injects (transient
errors, a stalled saga, a crash point). Policy fields are checked by name: a typo is not ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from engine import faults
from engine.faults import parse_faults, parse_stall
from engine.retry import MAX_ATTEMPTS, CompensationRetryPolicy, RetryPolicy
from engine.settings.base import SettingsGroup, did_you_mean

HOLD_LONGEST_WAIT = 300.0  # seconds between two looks at a record held for a newer version, at most


class FailureSettings(SettingsGroup):
    faults: str | None = Field(
        default=None, description='Transient-error injection: "0.3", or "status=0.3,combat.compensations=0.1".'
    )
    stall: str | None = Field(
        default=None,
        description='One saga stuck on a transient error: "combat=stall-:10" makes combat fail every saga whose id '
        "starts with stall- for 10 s after its first attempt at it, then succeed. Off by default.",
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Every step's retry policy.")
    step_retry: dict[str, RetryPolicy] = Field(
        default_factory=dict, description='Per-step overrides, JSON: {"pokeball": {"maximum_attempts": 10}}.'
    )
    compensation_retry: CompensationRetryPolicy = Field(
        default_factory=CompensationRetryPolicy,
        description="Compensators' policy (intervals); the database refusing the change is not retried. How many "
        "attempts: compensation_attempts.",
        json_schema_extra={"not_shown": ["maximum_attempts"]},  # in the documented default: not read here
    )
    compensation_attempts: int = Field(
        default=20,
        ge=1,
        le=MAX_ATTEMPTS,
        description="A compensation still failing after this many attempts is dead-lettered (reason "
        "compensation_failed) and its saga shown as needing an operator; one whose own output can never be valid "
        "is dead-lettered at once.",
    )
    newer_version_wait_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A record of a version newer than this instance reads is held (parked, reason newer_version, "
        "its saga's later records behind it) and looked at again after this long, then twice as long each time, "
        "at most 5 minutes apart (or this long, if longer); an instance starting looks at once.",
    )
    newer_version_hold_hours: float = Field(
        default=24.0,
        gt=0,
        description="A record held for a newer version longer than this is dead-lettered (reason newer_version): "
        "its saga then waits for a person (`pokesaga dlq replay` once upgraded).",
    )
    crash_at: str | None = Field(default=None, description="A named crash point; off by default.")

    def newer_version_wait(self, holds: int) -> float:
        """How long a record held ``holds`` times already waits before the next look: doubling from
        ``newer_version_wait_seconds``, at most ``HOLD_LONGEST_WAIT`` (or that setting, if longer)."""
        longest = max(self.newer_version_wait_seconds, HOLD_LONGEST_WAIT)
        return min(self.newer_version_wait_seconds * 2 ** min(holds, 32), longest)

    @field_validator("faults")
    @classmethod
    def _valid_faults(cls, value: str | None) -> str | None:
        try:
            parse_faults(value)
        except ValueError as exc:
            raise ValueError(f"POKESAGA_FAULTS: {exc}") from None
        return value

    @field_validator("stall")
    @classmethod
    def _valid_stall(cls, value: str | None) -> str | None:
        for participant in parse_stall(value):
            service = participant.removesuffix(".compensations")
            if cls.SERVICES and service not in cls.SERVICES:
                names = [*cls.SERVICES, *(f"{s}.compensations" for s in cls.SERVICES)]
                close = did_you_mean(participant, names)
                raise ValueError(
                    f"unknown participant {participant!r}{close}; expected one of {', '.join(cls.SERVICES)}"
                    " (or SERVICE.compensations)"
                )
        return value or None

    @field_validator("crash_at")
    @classmethod
    def _known_crash_point(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value not in faults.POINTS:
            close = did_you_mean(value, faults.POINTS)
            raise ValueError(
                f"unknown crash point {value!r}{close}; expected one of {', '.join(faults.POINTS)}, or unset"
            )
        return value

    @field_validator("retry", "compensation_retry", mode="before")
    @classmethod
    def _known_policy_fields(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name == "compensation_retry" and isinstance(value, dict) and "maximum_attempts" in value:
            raise ValueError(
                "maximum_attempts is no longer read here: set POKESAGA_COMPENSATION_ATTEMPTS (a compensation still "
                "failing after that many attempts is dead-lettered; default 20)"
            )
        _check_policy_fields(value, "")
        return value

    @field_validator("compensation_attempts", mode="before")
    @classmethod
    def _whole_attempts(cls, value: Any) -> Any:
        text = str(value).strip()
        if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
            shown = text if len(text) <= 60 else text[:60] + "…"
            raise ValueError(f"expected a whole number of attempts, 1 or more; got {shown!r}")
        return int(text)

    @field_validator("step_retry", mode="before")
    @classmethod
    def _known_steps(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for step, policy in value.items():
                if cls.SERVICES and step not in cls.SERVICES:
                    close = did_you_mean(step, cls.SERVICES)
                    raise ValueError(f"unknown step {step!r}{close}; expected one of {', '.join(cls.SERVICES)}")
                _check_policy_fields(policy, f"{step}.")
        return value

    def retry_policy(self, participant: str, compensator: bool) -> RetryPolicy:
        if compensator:
            return self.compensation_retry.model_copy(update={"maximum_attempts": self.compensation_attempts})
        return self.step_retry.get(participant, self.retry)


def _check_policy_fields(policy: Any, prefix: str) -> None:
    """A retry policy given as a mapping names only RetryPolicy's fields (a typo is not ignored)."""
    if not isinstance(policy, dict):
        return
    fields = list(RetryPolicy.model_fields)
    for key in policy:
        if key not in fields:
            close = did_you_mean(str(key), fields)
            raise ValueError(f"unknown retry field {prefix}{key}{close}; expected {', '.join(fields)}")
