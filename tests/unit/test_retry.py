"""The retry policy's schedule and the fault-injection setting."""

from __future__ import annotations

import itertools
import random

import pytest
from sqlalchemy.exc import IntegrityError

from capture.settings import Settings
from engine.retry import FaultInjector, RetryPolicy, TransientFault, parse_faults


def test_backoff_grows_by_the_coefficient_up_to_the_maximum_interval() -> None:
    policy = RetryPolicy(initial_interval=0.1, backoff_coefficient=3, maximum_interval=1, maximum_attempts=6)
    assert list(policy.delays()) == pytest.approx([0.1, 0.3, 0.9, 1, 1])  # 5 retries after the first try


def test_zero_maximum_attempts_retries_without_end() -> None:
    assert len(list(itertools.islice(RetryPolicy(maximum_attempts=0).delays(), 1000))) == 1000


def test_one_attempt_means_no_retry() -> None:
    assert list(RetryPolicy(maximum_attempts=1).delays()) == []


def test_non_retryable_types_match_by_name_including_base_classes() -> None:
    policy = RetryPolicy(non_retryable_error_types=("IntegrityError", "LookupError"))
    assert not policy.retryable(IntegrityError("x", None, Exception()))
    assert not policy.retryable(KeyError("k"))  # a LookupError
    assert policy.retryable(RuntimeError("r"))


def test_the_policy_and_faults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POKESAGA_RETRY__MAXIMUM_ATTEMPTS", "9")
    monkeypatch.setenv("POKESAGA_RETRY__NON_RETRYABLE_ERROR_TYPES", '["ValueError"]')
    monkeypatch.setenv("POKESAGA_STEP_RETRY", '{"pokeball": {"maximum_attempts": 2}}')
    monkeypatch.setenv("POKESAGA_FAULTS", "0.3")
    monkeypatch.setenv("POKESAGA_COMPENSATION_RETRY__INITIAL_INTERVAL", "0.5")
    settings = Settings()
    assert settings.retry_policy("status", compensator=False).maximum_attempts == 9
    assert settings.retry_policy("status", compensator=False).non_retryable_error_types == ("ValueError",)
    assert settings.retry_policy("pokeball", compensator=False).maximum_attempts == 2
    compensation = settings.retry_policy("pokeball.compensations", compensator=True)
    assert (compensation.initial_interval, compensation.maximum_attempts) == (0.5, 0)  # the rest keeps its defaults
    assert "IntegrityError" in compensation.non_retryable_error_types
    assert parse_faults(settings.faults) == {"*": 0.3}


def test_faults_name_participants_or_all() -> None:
    assert parse_faults("status=0.5, combat.compensations=1") == {"status": 0.5, "combat.compensations": 1.0}
    assert FaultInjector("status=0.5,*=0.1", "status").probability == 0.5
    assert FaultInjector("status=0.5,*=0.1", "delivery").probability == 0.1
    assert FaultInjector(None, "delivery").probability == 0.0
    with pytest.raises(ValueError):
        parse_faults("1.5")


def test_an_injected_fault_fires_at_its_probability() -> None:
    injector = FaultInjector("0.3", "combat", rng=random.Random(1))
    fired = 0
    for _ in range(10_000):
        try:
            injector.maybe_fail()
        except TransientFault:
            fired += 1
    assert 2700 < fired < 3300
