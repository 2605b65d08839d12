"""docs/writing-a-saga.md, followed as written: its files written out of the page into a folder of
their own, its commands run in order (each service a process of its own, on a broker of its own),
and the outcomes the page shows are the outcomes printed. A new service's first start warns of
nothing: it says it is its first start."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import new_broker
from tests.support import ROOT

pytestmark = pytest.mark.no_database  # SQLite, as the page runs it

PAGE = ROOT / "docs" / "writing-a-saga.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(PAGE.read_text(encoding="utf-8")) if lang == language]


def files() -> dict[str, str]:
    """Every file the page shows whole: a Python block whose first line is ``# trip/….py``."""
    found = {}
    for body in blocks("python"):
        first, _, rest = body.partition("\n")
        if re.fullmatch(r"# trip/[\w/]+\.py", first):
            found[first.removeprefix("# ")] = rest
    return found


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with new_broker(tmp_path_factory.mktemp("trip") / "broker") as bootstrap:
        yield bootstrap


def test_the_page_writes_a_whole_saga() -> None:
    assert sorted(files()) == [
        "trip/__main__.py", "trip/events.py", "trip/flight/handlers.py", "trip/flight/tables.py",
        "trip/hotel/handlers.py", "trip/hotel/tables.py", "trip/saga.py",
    ]  # fmt: skip
    declaration = files()["trip/saga.py"]
    assert len(declaration.strip().splitlines()) <= 20, "a saga in twenty lines"


def test_the_pages_steps_run_as_written(broker: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    for name, text in files().items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text, encoding="utf-8")
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=broker, POKESAGA_DATA_DIR=str(tmp_path / "data"))
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(ROOT)])
    env.pop("POKESAGA_TEST_POSTGRES", None)
    (commands,) = [b for b in blocks("bash") if "python -m trip" in b]
    (expected,) = [b for b in blocks("text") if "FlightBooked" in b]
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    printed: list[str] = []
    try:
        for line in commands.splitlines():
            if line.startswith(("pokesaga kafka", "export KAFKA_BOOTSTRAP_SERVERS")):
                continue  # the test's own broker stands in for the local one
            words = shlex.split(line.removesuffix("&"))
            assert words[:3] == ["python", "-m", "trip"], line
            argv = [sys.executable, *words[1:]]
            if line.endswith("&"):
                log = tmp_path / f"{words[-1]}.log"
                with open(log, "wb") as out:
                    process = subprocess.Popen(argv, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
                running.append((process, log))
                continue
            done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{line}: {done.stderr.strip()}"
            if "start" in words:
                printed.append(done.stdout.strip().splitlines()[-1])  # after the saga id: its outcome
    finally:
        for process, _ in running:
            process.terminate()
        codes = [process.wait(timeout=60) for process, _ in running]
    assert printed == expected.strip().splitlines()
    assert codes == [0] * len(running)
    assert sorted(p.name[:5] for p in (project / "trip").glob("*/migrations/*.py")) == ["0001_", "0001_"]
    for _, log in running:
        said = log.read_text(encoding="utf-8")
        assert "first start" in said, said
        assert " WARNING " not in said and "Traceback" not in said, said
