"""The retry policy's schedule and the fault-injection setting."""

from __future__ import annotations

import itertools
import random

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from capture.cli import main
from capture.settings import Settings
from engine.faults import FaultInjector, Stall, TransientFault, parse_faults, parse_stall
from engine.retry import RetryPolicy


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
    assert (compensation.initial_interval, compensation.maximum_attempts) == (0.5, 20)  # the rest keeps its defaults
    assert "IntegrityError" in compensation.non_retryable_error_types
    assert parse_faults(settings.faults) == {"*": 0.3}


def test_a_compensation_is_tried_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().compensation_attempts == 20
    assert len(list(Settings().retry_policy("status.compensations", compensator=True).delays())) == 19
    monkeypatch.setenv("POKESAGA_COMPENSATION_ATTEMPTS", " 3 ")
    assert Settings().retry_policy("combat.compensations", compensator=True).maximum_attempts == 3
    assert Settings().retry_policy("combat", compensator=False).maximum_attempts == 5  # steps keep theirs


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "many", "", "²", "1e3"])
def test_compensation_attempts_must_be_a_whole_number_above_zero(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POKESAGA_COMPENSATION_ATTEMPTS", value)
    with pytest.raises(ValidationError, match="expected a whole number of attempts, 1 or more"):
        Settings()
    assert main(["inspect", "trainer", "Nobody"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pokesaga: POKESAGA_COMPENSATION_ATTEMPTS: expected a whole number of attempts"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POKESAGA_COMPENSATION_RETRY__MAXIMUM_ATTEMPTS", "0"),
        ("POKESAGA_COMPENSATION_RETRY", '{"maximum_attempts": 50}'),
    ],
)
def test_the_old_compensation_attempts_setting_is_refused_with_the_new_name(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["inspect", "trainer", "Nobody"]) == 2
    err = capsys.readouterr().err
    assert "POKESAGA_COMPENSATION_RETRY: maximum_attempts is no longer read here" in err, err
    assert "set POKESAGA_COMPENSATION_ATTEMPTS" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


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


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attempt(injector: FaultInjector, saga_id: str | None) -> bool:
    """True when the attempt went through, False when it raised the injected fault."""
    try:
        injector.maybe_fail(saga_id)
    except TransientFault:
        return False
    return True


def test_a_stalled_saga_fails_for_its_seconds_after_the_first_attempt_then_succeeds() -> None:
    clock = Clock()
    injector = FaultInjector(None, "combat", stall="combat=stall-:10", clock=clock)
    clock.now += 100  # the injector was built long before: the clock starts at the first attempt
    assert not attempt(injector, "stall-1")
    clock.now += 9.9
    assert not attempt(injector, "stall-1")
    clock.now += 0.1
    assert attempt(injector, "stall-1")
    assert attempt(injector, "stall-1")  # and from then on


def test_each_stalled_saga_counts_from_its_own_first_attempt() -> None:
    clock = Clock()
    injector = FaultInjector(None, "combat", stall="combat=stall-:10", clock=clock)
    assert not attempt(injector, "stall-a")
    clock.now += 6
    assert not attempt(injector, "stall-b")
    clock.now += 5
    assert attempt(injector, "stall-a") and not attempt(injector, "stall-b")
    clock.now += 5
    assert attempt(injector, "stall-b")


def test_a_stall_spares_other_sagas_other_participants_and_an_attempt_without_a_saga_id() -> None:
    clock = Clock()
    combat = FaultInjector(None, "combat", stall="combat=stall-:10", clock=clock)
    assert attempt(combat, "other-stall-1")  # a prefix, not a substring
    assert attempt(combat, None)
    assert attempt(combat, "ok-1")
    assert attempt(combat, "ok-1")
    assert attempt(FaultInjector(None, "combat.compensations", stall="combat=stall-:10", clock=clock), "stall-1")
    assert attempt(FaultInjector(None, "status", stall="combat=stall-:10", clock=clock), "stall-1")
    assert attempt(FaultInjector(None, "combat", clock=clock), "stall-1")


def test_a_stall_and_random_faults_combine() -> None:
    injector = FaultInjector("combat=1", "combat", stall="combat=stall-:10")
    assert not attempt(injector, "ok-1")  # the random fault, probability 1
    assert FaultInjector("0", "combat", stall="combat=stall-:10").probability == 0


def test_the_stall_setting_names_participants_prefixes_and_seconds() -> None:
    assert parse_stall("combat=stall-:10") == {"combat": Stall("stall-", 10.0)}
    assert parse_stall(" combat=a:b:2.5 , delivery.compensations=slow-:0.5") == {
        "combat": Stall("a:b", 2.5),  # the seconds follow the last colon
        "delivery.compensations": Stall("slow-", 0.5),
    }
    assert parse_stall(None) == parse_stall("") == {}
    assert Settings(stall="pokeball.compensations=x-:1").stall == "pokeball.compensations=x-:1"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("combat", "PARTICIPANT=SAGA_ID_PREFIX:SECONDS"),
        ("combat=stall-", "PARTICIPANT=SAGA_ID_PREFIX:SECONDS"),
        ("=stall-:10", "PARTICIPANT=SAGA_ID_PREFIX:SECONDS"),
        ("combat=stall-:ten", "seconds must be a number, got 'ten'"),
        ("combat=stall-:0", "seconds must be above 0"),
        ("combat=stall-:nan", "seconds must be above 0"),
        ("combat=a-:1,combat=b-:2", "named twice"),
    ],
)
def test_a_malformed_stall_is_refused_with_the_expected_form(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_stall(spec)
    with pytest.raises(ValueError, match=needle):
        Settings(stall=spec)


def test_a_stall_naming_an_unknown_participant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown participant 'comabt' \(did you mean 'combat'\?\)"):
        Settings(stall="comabt=stall-:10")
    with pytest.raises(ValueError, match="unknown participant 'combat.compensation'"):
        Settings(stall="combat.compensation=stall-:10")


@pytest.mark.parametrize(
    "fields",
    [
        {"initial_interval": float("inf")},
        {"maximum_interval": float("nan")},
        {"maximum_interval": 1e12},  # a retry in 30,000 years
        {"initial_interval": 86_401},
        {"backoff_coefficient": 1e10},
        {"maximum_attempts": 10**30},
    ],
)
def test_a_policy_beyond_any_sane_bound_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**fields)


def test_the_waits_grow_to_the_maximum_and_end_with_the_attempts() -> None:
    policy = RetryPolicy(initial_interval=0.05, backoff_coefficient=2, maximum_interval=0.3, maximum_attempts=6)
    assert [policy.delay_after(n) for n in range(1, 7)] == [0.05, 0.1, 0.2, 0.3, 0.3, None]
    unlimited = RetryPolicy(maximum_attempts=0, backoff_coefficient=1000, maximum_interval=86_400)
    assert unlimited.delay_after(10**9) == 86_400  # no overflow, however long it has failed
