"""``pokesaga bench`` runs and reports: a smoke test of the figures' shape, never of their values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from capture.settings import Settings
from devtools.processes import settings_env
from tests import databases


def test_the_bench_prints_one_json_line_with_every_figure(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = databases.with_databases(Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=tmp_path), "bench")
    args = ["bench", "--sagas", "60", "--concurrency", "20", "--warmup", "5", "--failure-mix", "0.25"]
    args += ["--db", "postgres" if databases.BACKEND == "postgresql" else "sqlite"]
    env = settings_env(settings)
    done = subprocess.run(
        [sys.executable, "-m", "capture.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = done.stdout.strip().splitlines()
    figures = json.loads(line)
    assert figures["sagas"] == 60 and figures["sagas_per_s"] > 0 and figures["db"] == args[-1]
    assert sum(figures["outcomes"].values()) == 60
    assert figures["outcomes"]["CaptureFailed"] == 15  # every fourth saga fails
    assert set(figures["e2e_ms"]) == {"p50", "p95", "p99", "max"}
    assert set(figures["steps"]) >= {"status", "combat", "pokeball", "delivery"}
    assert {"schedule_to_start_mean_ms", "execution_mean_ms"} <= set(figures["steps"]["pokeball"])
    assert len(figures["processes"]) == 4 and all(p["rss_mb"] > 0 for p in figures["processes"].values())
