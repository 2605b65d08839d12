"""``pokesaga bench --peer dbos``: our services and DBOS Transact on the same workload, one JSON line.
A smoke test of the figures' shape and of the outcomes, never of their values."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from capture.cli import main
from capture.settings import Settings
from tests import databases
from tests.e2e.conftest import bench_figures


def test_the_bench_runs_the_same_workload_on_dbos_and_prints_both_and_the_ratio(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = databases.with_databases(Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=tmp_path), "peer")
    db = "postgres" if databases.BACKEND == "postgresql" else "sqlite"
    # Every fifth saga fails, at status and at combat in turn: both ways of unwinding run on both sides.
    args = ["--peer", "dbos", "--sagas", "30", "--concurrency", "5", "--warmup", "5", "--failure-mix", "0.2"]
    figures = bench_figures(settings, *args, "--db", db)
    peer: dict[str, Any] = figures["peer"]
    assert figures["db"] == peer["db"] == db and peer["name"] == "dbos" and peer["version"]
    assert figures["sagas"] == peer["sagas"] == 30 and figures["concurrency"] == peer["concurrency"] == 5
    assert figures["outcomes"] == peer["outcomes"] == {"PokemonDelivered": 24, "CaptureFailed": 6}
    for run in (figures, peer):
        assert run["sagas_per_s"] > 0 and set(run["e2e_ms"]) == {"p50", "p95", "p99", "max"}
    assert peer["cpu_s"] >= 0 and peer["rss_mb"] > 0
    assert set(figures["ratio_to_peer"]) == {"sagas_per_s"} and figures["ratio_to_peer"]["sagas_per_s"] > 0


@pytest.mark.no_database  # refused before anything runs
def test_without_the_extra_the_peer_bench_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dbos" else find_spec(name, *a))
    assert main(["bench", "--peer", "dbos", "--sagas", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "pokesaga bench --peer dbos needs: pip install 'pokesaga[peers]'"
    assert captured.out == ""
