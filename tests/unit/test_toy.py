"""The toy saga the engine's tests run (tests/toy) does what its docstring says: a test of the
engine that fails should fail for the engine, not for its vehicle."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from engine import HandlerEnvironment
from tests.toy.events import Asked, FirstDone, SecondDone, SecondFailed, ToyFailed
from tests.toy.handlers import do_first, do_second, undo_first
from tests.toy.kit import engine_for
from tests.toy.saga import TOY, Settings


def test_the_toy_has_two_steps_and_one_compensation_whose_chain_ends_in_an_outcome() -> None:
    assert list(TOY.participants) == ["first", "second", "first.compensations"]
    assert TOY.start is Asked and TOY.outcome_types == {"SecondDone", "ToyFailed"}
    assert TOY.handled_by == {"Asked": "first", "FirstDone": "second", "FirstFailed": "first.compensations",
                              "SecondFailed": "first.compensations"}  # fmt: skip


def test_a_refused_second_step_is_undone_by_the_first_services_compensation() -> None:
    with HandlerEnvironment(TOY.services["first"]) as first, HandlerEnvironment(TOY.services["second"]) as second:
        assert first.run(do_first, Asked(name="Ann", refuse=True), saga_id="s") == [FirstDone(name="Ann", refuse=True)]
        (refused,) = second.run(do_second, FirstDone(name="Ann", refuse=True), saga_id="s")
        assert isinstance(refused, SecondFailed) and refused.reason == "refused"
        (failed,) = first.run(undo_first, refused, saga_id="s")
        assert isinstance(failed, ToyFailed) and failed.undone == ("first",)
        with first.records() as records:
            assert (records.count("Ann"), records.outcome("s")) == (0, "undone")
        assert second.run(do_second, FirstDone(name="Bea"), saga_id="t") == [SecondDone(name="Bea")]


def test_the_toys_migrations_make_exactly_its_tables(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    for name, service in TOY.services.items():
        engine = engine_for(name, settings)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), service.metadata) == [], name
        engine.dispose()
