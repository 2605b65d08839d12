"""The engine's settings (engine.settings): what a consumer group's membership may be, where each
service's database is (``databases``, in each of its forms), and the warning a misspelt variable gets."""

from __future__ import annotations

import logging
import os

import pytest
from pydantic import ValidationError

import engine
from engine.settings import Settings, variables
from tests.toy.saga import TOY
from tests.toy.saga import Settings as ToySettings


def test_a_heartbeat_longer_than_a_third_of_the_session_is_refused() -> None:
    with pytest.raises(ValidationError, match="more than a third of POKESAGA_SESSION_TIMEOUT_MS"):
        Settings(session_timeout_ms=6000, heartbeat_interval_ms=2500)
    assert Settings(session_timeout_ms=6000, heartbeat_interval_ms=2000).group_membership() == {
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 2000,
        "group_instance_id": None,
    }


# -- each service's database: Settings.databases, from any of its forms --------------------------


FIRST, SECOND, OTHER = "sqlite:////tmp/first.db", "sqlite:////tmp/second.db", "sqlite:////tmp/other.db"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No POKESAGA_ variable of the shell that runs the tests, and every warning said afresh."""
    for name in list(os.environ):
        if name.upper().startswith("POKESAGA_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(variables, "_warned", set())


def test_for_saga_binds_the_services_of_a_saga_without_a_subclass_of_ones_own() -> None:
    bound = Settings.for_saga(TOY)
    assert bound.SERVICES == ("first", "second") and issubclass(bound, engine.Settings)
    assert ToySettings.SERVICES == ("first", "second")
    assert bound().db_url("first").endswith("/.pokesaga/first.db")
    with pytest.raises(ValueError, match="unknown service 'third'"):
        bound().db_url("third")


def test_a_database_is_read_from_each_form_the_narrower_winning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POKESAGA_DATABASES", f'{{"first": "{OTHER}", "second": "{OTHER}"}}')
    assert ToySettings().databases == {"first": OTHER, "second": OTHER}
    monkeypatch.setenv("POKESAGA_DATABASES__FIRST", FIRST)
    monkeypatch.setenv("POKESAGA_SECOND_DB_URL", SECOND)  # the form compose files and users already set
    settings = ToySettings()
    assert settings.databases == {"first": FIRST, "second": SECOND}
    assert (settings.db_url("first"), settings.db_url("second")) == (FIRST, SECOND)
    assert settings.database_setting("first") == "POKESAGA_DATABASES__FIRST"
    assert settings.database_setting("second") == "POKESAGA_SECOND_DB_URL"
    assert ToySettings(databases={"first": OTHER}).db_url("first") == OTHER  # an argument wins


def test_an_empty_database_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POKESAGA_FIRST_DB_URL", "")
    monkeypatch.setenv("POKESAGA_DATABASES__SECOND", " ")
    assert ToySettings().databases == {}
    assert ToySettings().database_setting("first") is None


def test_a_bad_database_url_is_refused_naming_the_variable_that_gave_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POKESAGA_FIRST_DB_URL", "postgres:/nohost")
    with pytest.raises(ValidationError) as refused:
        ToySettings()
    assert refused.value.errors()[0]["loc"] == ("POKESAGA_FIRST_DB_URL",)
    assert "could not parse 'postgres:/nohost'" in refused.value.errors()[0]["msg"]
    monkeypatch.delenv("POKESAGA_FIRST_DB_URL")
    monkeypatch.setenv("POKESAGA_DATABASES", '{"second": "postgresql://u:s3cret@:x/db"}')
    with pytest.raises(ValidationError) as refused:
        ToySettings()
    assert refused.value.errors()[0]["loc"] == ("POKESAGA_DATABASES", "second")
    assert "s3cret" not in str(refused.value)


def test_a_database_of_no_service_of_the_saga_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POKESAGA_DATABASES", f'{{"frist": "{FIRST}"}}')
    with pytest.raises(ValidationError, match=r"unknown service 'frist' \(did you mean 'first'\?\)"):
        ToySettings()
    monkeypatch.delenv("POKESAGA_DATABASES")
    assert Settings(databases={"anything": FIRST}).db_url("anything") == FIRST  # no saga bound: any service


def test_two_variables_naming_different_databases_for_one_service_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POKESAGA_FIRST_DB_URL", FIRST)
    monkeypatch.setenv("POKESAGA_DATABASES__FIRST", OTHER)
    with pytest.raises(ValidationError, match="POKESAGA_DATABASES__FIRST and POKESAGA_FIRST_DB_URL name different"):
        ToySettings()
    monkeypatch.setenv("POKESAGA_DATABASES__FIRST", FIRST)  # the same one twice: fine
    assert ToySettings().db_url("first") == FIRST


def test_code_written_for_the_db_url_fields_still_works() -> None:
    """Callers of ``<service>_db_url`` (arguments, model_copy, getattr) see ``databases``."""
    settings = ToySettings(first_db_url=FIRST)
    assert settings.databases == {"first": FIRST}
    assert getattr(settings, "first_db_url") == FIRST and getattr(settings, "second_db_url") is None  # noqa: B009
    copied = settings.model_copy(update={"first_db_url": None, "second_db_url": SECOND})
    assert copied.databases == {"second": SECOND} and settings.databases == {"first": FIRST}
    with pytest.raises(AttributeError):
        getattr(settings, "third_db_url")  # noqa: B009
    with pytest.raises(ValidationError, match="could not parse"):
        ToySettings(second_db_url="not-a-url")


# -- a POKESAGA_ variable no setting reads: one warning naming the closest ----------------------


def test_a_misspelt_variable_is_said_once_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("POKESAGA_PARTITONS", "6")
    monkeypatch.setenv("POKESAGA_SECOND_DBURL", SECOND)
    monkeypatch.setenv("POKESAGA_TEST_POSTGRES", "postgresql://x")  # read by the tests, not the settings
    monkeypatch.setenv("POKESAGA_RETRY__MAXIMUM_ATTEMPTS", "3")  # a part of a JSON setting
    monkeypatch.setenv("POKESAGA_FIRST_DB_URL", FIRST)  # a service of the saga
    with caplog.at_level(logging.WARNING, logger="engine.settings"):
        ToySettings()
        ToySettings()  # once per process
    assert [r.getMessage() for r in caplog.records] == [
        "pokesaga: unknown setting POKESAGA_PARTITONS (did you mean POKESAGA_PARTITIONS?)",
        "pokesaga: unknown setting POKESAGA_SECOND_DBURL (did you mean POKESAGA_SECOND_DB_URL?)",
    ]


def test_the_unknown_variables_are_those_of_no_setting_of_the_class() -> None:
    environ = {
        "POKESAGA_PARTITIONS": "3",
        "POKESAGA_KAFKA_SSL_CAFILE": "ca.pem",  # an alias
        "POKESAGA_STEP_RETRY__FIRST__MAXIMUM_ATTEMPTS": "3",
        "POKESAGA_DATABASES__FIRST": FIRST,
        "POKESAGA_THIRD_DB_URL": OTHER,  # no service of the toy
        "POKESAGA_XYZZY": "1",
        "KAFKA_WHATEVER": "1",  # not ours to judge
    }
    assert variables.unknown_variables(ToySettings, environ) == [
        ("POKESAGA_THIRD_DB_URL", "POKESAGA_FIRST_DB_URL"),
        ("POKESAGA_XYZZY", None),
    ]
    assert variables.unknown_variables(Settings, environ) == [("POKESAGA_XYZZY", None)]  # no saga: any service


def test_a_field_of_a_saga_called_like_a_database_stays_its_own() -> None:
    from pydantic import Field

    class Audited(ToySettings):
        audit_db_url: str = Field(default="", description="Not a service's database: the saga's own setting.")

    settings = Audited(audit_db_url="kept", first_db_url=FIRST)
    assert settings.audit_db_url == "kept" and settings.databases == {"first": FIRST}
    assert settings.model_copy(update={"audit_db_url": "again"}).audit_db_url == "again"
