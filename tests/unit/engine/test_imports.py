"""What a process pays for before it does anything: ``engine`` hands out its names when first asked,
and a command that touches no database schema does not load Alembic (each Python process of the
suites and of a user's shell starts some 0.25 s sooner for it)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import engine


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    shown = f"{statement}; import sys; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", shown], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_every_name_engine_offers_is_the_one_its_module_defines() -> None:
    assert set(engine.__all__) == set(engine._HOME) and set(engine.__all__) <= set(dir(engine))
    for name in engine.__all__:
        assert getattr(engine, name) is getattr(importlib.import_module(engine._HOME[name]), name), name
    with pytest.raises(AttributeError, match="module 'engine' has no attribute 'Sagas'"):
        engine.Sagas  # noqa: B018  (a typo is an AttributeError, as for any module)


def test_importing_engine_loads_none_of_its_parts_until_a_name_is_asked_for() -> None:
    loaded = loaded_after("import engine")
    assert not {"engine.saga", "engine.worker.run", "sqlalchemy", "aiokafka", "alembic"} & loaded
    assert "engine.events" in loaded_after("from engine import Event")


def test_the_command_line_loads_alembic_only_for_the_commands_that_migrate() -> None:
    assert not {m for m in loaded_after("import capture.cli") if m.split(".")[0] == "alembic"}
    assert "alembic" in loaded_after("import capture.cli; from engine.store import migrate")
