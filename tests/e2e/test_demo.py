"""``pokesaga demo``, the main job, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_demo_brings_every_saga_to_an_outcome_and_prints_a_summary(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, POKESAGA_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "demo", "--sagas", "16", "--seed", "7", "--timeout", "120"],
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
