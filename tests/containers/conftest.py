"""The container suite: the images built, a Docker engine (started for the suite when none runs,
and stopped after it), the compose project up for the suite's tests and down at its end.

It runs once in ``make test``, in a lane of its own before the PostgreSQL pass (``no_database``: that pass leaves it
out; its databases are the PostgreSQL container's whatever the pass)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers.stack import ROOT, Stack, brought_up, run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.containers)
            item.add_marker(pytest.mark.no_database)


@pytest.fixture(scope="package")
def engine() -> Iterator[dict[str, str]]:
    """An environment whose DOCKER_HOST answers; the engine stopped after the suite if the
    suite started it (scripts/docker-engine: only its own, and only once no one else uses it)."""
    lease = str(os.getpid())
    started = subprocess.run(
        [str(ROOT / "scripts" / "docker-engine"), "up", lease], capture_output=True, text=True, timeout=120
    )
    if started.returncode != 0:
        pytest.fail(f"no Docker engine: {started.stderr.strip()}", pytrace=False)
    env = os.environ | {"DOCKER_HOST": started.stdout.strip()}
    try:
        yield env
    finally:
        subprocess.run([str(ROOT / "scripts" / "docker-engine"), "down", lease], timeout=120)


@pytest.fixture(scope="package")
def compose_files(engine: dict[str, str]) -> str:
    """Every image compose runs: built (pokesaga), pulled, or stand-ins where nothing can be pulled."""
    built = run(str(ROOT / "scripts" / "images"), env=engine, timeout=1200)
    print(built.stderr, end="")  # what was built, and how long it took (shown with -s or on failure)
    found = re.search(r"^export COMPOSE_FILE=(\S+)$", built.stdout, re.M)
    assert found, built.stdout + built.stderr
    return found[1]


@pytest.fixture(scope="package")
def stack(engine: dict[str, str], compose_files: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``docker compose up -d`` on free host ports, every long-running container healthy; at the
    end ``docker compose down -v``, checked to leave nothing of the project behind."""
    with brought_up(engine, compose_files, "pokesaga-suite", tmp_path_factory.mktemp("containers")) as stack:
        yield stack
