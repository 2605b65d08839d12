"""``pokesaga demo``, the main job, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from capture.processes import settings_env
from capture.settings import Settings
from tests import databases


@pytest.mark.no_database  # the command's output; the services' work on PostgreSQL is the other e2e tests'
def test_the_demo_brings_every_saga_to_an_outcome_and_prints_a_summary(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=tmp_path)
    env = settings_env(databases.with_databases(settings, "demo"))  # SQLite files, or PostgreSQL
    done = subprocess.run(
        [sys.executable, "-m", "capture.cli", "demo", "--sagas", "16", "--seed", "7", "--timeout", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "16/16 sagas at an outcome" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["outcome", "detail", "sagas"]
    counted = sum(int(line.split()[-1]) for line in lines[2:] if line.startswith(("PokemonDelivered", "CaptureFailed")))
    assert counted == 16
    assert any(line.split()[:2] == ["no", "outcome"] and line.split()[-1] == "0" for line in lines)
    assert "Traceback" not in done.stderr
