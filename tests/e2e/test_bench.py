"""``pokesaga bench`` runs and reports: a smoke test of the figures' shape, never of their values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from capture.processes import settings_env
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from engine.ops import acls
from tests import databases
from tests.conftest import new_broker
from tests.e2e.conftest import bench_figures


def test_the_bench_prints_ours_and_the_peers_figures_in_one_json_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    """One run for both: the services started once (the bulk of a bench's time), then the same
    workload on DBOS Transact (``--peer dbos``, tests/e2e/test_bench_peer.py for its refusal)."""
    settings = databases.with_databases(Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=tmp_path), "bench")
    db = "postgres" if databases.BACKEND == "postgresql" else "sqlite"
    # Every fifth saga fails, at status and at combat in turn: both ways of unwinding run on both sides.
    args = ["--peer", "dbos", "--sagas", "60", "--concurrency", "20", "--warmup", "5", "--failure-mix", "0.2"]
    figures = bench_figures(settings, *args, "--db", db)
    assert figures["sagas"] == 60 and figures["sagas_per_s"] > 0 and figures["db"] == db
    assert figures["outcomes"] == {"PokemonDelivered": 48, "CaptureFailed": 12}
    assert set(figures["e2e_ms"]) == {"p50", "p95", "p99", "max"}
    assert set(figures["steps"]) >= {"status", "combat", "pokeball", "delivery"}
    assert {"schedule_to_start_mean_ms", "execution_mean_ms"} <= set(figures["steps"]["pokeball"])
    assert len(figures["processes"]) == 4 and all(p["rss_mb"] > 0 for p in figures["processes"].values())
    peer: dict[str, Any] = figures["peer"]
    assert peer["db"] == db and peer["name"] == "dbos" and peer["version"]
    assert peer["sagas"] == 60 and figures["concurrency"] == peer["concurrency"] == 20
    assert peer["outcomes"] == figures["outcomes"]
    assert peer["sagas_per_s"] > 0 and set(peer["e2e_ms"]) == {"p50", "p95", "p99", "max"}
    assert peer["cpu_s"] >= 0 and peer["rss_mb"] > 0
    assert set(figures["ratio_to_peer"]) == {"sagas_per_s"} and figures["ratio_to_peer"]["sagas_per_s"] > 0


@pytest.mark.no_database  # a stall holding up only its partition is the broker's; --db postgres: the test above
def test_the_stall_one_scenario_prints_both_runs_the_ratio_and_the_stalled_saga(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = databases.with_databases(Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=tmp_path), "stall")
    args = ["--stall-one", "--sagas", "30", "--concurrency", "10", "--warmup", "0", "--stall-seconds", "2"]
    args += ["--db", "postgres" if databases.BACKEND == "postgresql" else "sqlite"]
    figures = bench_figures(settings, *args)
    assert figures["scenario"] == "stall-one" and figures["step"] == "combat" and figures["stall_s"] == 2
    for run in (figures["undisturbed"], figures["stalled"]):
        assert run["sagas"] == 30 and run["outcomes"] == {"PokemonDelivered": 30}
        assert set(run["e2e_ms"]) == {"p50", "p95", "p99", "max"}
    assert 0 <= figures["stalled"]["same_partition"]["sagas"] <= 30
    assert figures["p99_ratio"] > 0
    stalled = figures["stalled_saga"]
    assert stalled["saga_id"].startswith("stall-") and stalled["outcome"] == "PokemonDelivered"
    assert stalled["finished_after_s"] > 0 and stalled["partition"] in range(3)


@pytest.mark.no_database  # the tracker reads topics only
def test_the_console_bench_times_every_request_with_the_sagas_held(tmp_path: Path) -> None:
    with new_broker(tmp_path / "broker") as bootstrap:  # a broker of its own: the tracker counts only these
        env = settings_env(Settings(kafka_bootstrap_servers=bootstrap, data_dir=tmp_path))
        args = ["bench", "--console", "--sagas", "300"]
        done = subprocess.run(
            [sys.executable, "-m", "capture.cli", *args], env=env, capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = done.stdout.strip().splitlines()
    figures = json.loads(line)
    assert figures["scenario"] == "console" and figures["sagas"] == 300
    assert sum(figures["mix"].values()) == 300 and set(figures["mix"]) == {"delivered", "failed", "running"}
    tracker = figures["tracker"]
    assert tracker["retained"] == 300 and sum(tracker["states"].values()) == 300
    assert tracker["states"]["delivered"] == figures["mix"]["delivered"]
    assert tracker["states"]["failed"] == figures["mix"]["failed"]
    assert tracker["rss_mb"] > 0 and figures["ingest_s"] > 0 and figures["records"] > 300
    assert figures["rss_mb_by_sagas"][-1][0] == 300
    requests = figures["requests"]
    assert set(requests) == {
        "overview", "list", "failed", "search", "reason", "range_10m", "deep_page", "one_saga"
    }  # fmt: skip
    assert all({"p50", "p95", "max"} <= set(r) for r in requests.values())
    assert requests["list"]["matched"] == 300 and requests["failed"]["matched"] == figures["mix"]["failed"]
    assert 0 < requests["reason"]["matched"] < figures["mix"]["failed"]
    assert figures["slowest"]["request"] in requests
    assert figures["records_per_cpu_s"] > 0 and figures["paced"] is None


@pytest.mark.no_database  # the tracker reads topics only
def test_the_console_bench_at_a_rate_says_how_far_behind_the_tracker_read(tmp_path: Path) -> None:
    with new_broker(tmp_path / "broker") as bootstrap:
        env = settings_env(Settings(kafka_bootstrap_servers=bootstrap, data_dir=tmp_path))
        args = ["bench", "--console", "--sagas", "200", "--rate", "50"]
        done = subprocess.run(
            [sys.executable, "-m", "capture.cli", *args], env=env, capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert figures["tracker"]["retained"] == 200 and figures["staleness_s"] is not None
    paced = figures["paced"]
    assert paced["rate_sagas_per_s"] == 50 and paced["offered_records_per_s"] > 0 and paced["read_records_per_s"] > 0
    assert {"p50", "p99", "max"} == set(paced["second_half"]["staleness_s"])
    assert {"p50", "max"} == set(paced["second_half"]["lag_records"])
    assert isinstance(paced["keeps_up"], bool) and paced["drained_s"] >= 0
    assert all(len(window) == 3 for window in paced["by_10s"])


@pytest.mark.no_database  # TLS and SCRAM cost the same whatever the database: SQLite
def test_the_bench_on_the_secured_broker_runs_each_service_as_its_own_principal(tmp_path: Path) -> None:
    """``--secure``: a private secured broker, each service as its own principal over TLS with the
    declaration's ACLs in force; every saga finishes. (``--compare-secure`` is this run twice more,
    through the same broker's plaintext listener too, and the ratios of ``bench.secure.ratios``: its
    two more start-ups of every service are left to the bench itself, and the ratios to a unit test.)"""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("the secured broker is a local one: a JDK 17 and Maven (make system-deps)")
    env = {k: v for k, v in os.environ.items() if k.removeprefix("POKESAGA_") not in ("KAFKA_BOOTSTRAP_SERVERS",
           "KAFKA_SECURITY_PROTOCOL")} | {"POKESAGA_DATA_DIR": str(tmp_path)}  # fmt: skip
    args = ["bench", "--secure", "--sagas", "20", "--concurrency", "10", "--warmup", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "capture.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = done.stdout.strip().splitlines()
    figures = json.loads(line)
    assert figures["security"] == {
        "protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "acls": len(acls.derive(CAPTURE)),
        "principals": [*SERVICES, "starter"],
    }  # fmt: skip
    assert figures["outcomes"] == {"PokemonDelivered": 20}  # every saga finished
    assert figures["sagas_per_s"] > 0 and set(figures["e2e_ms"]) == {"p50", "p95", "p99", "max"}
    assert set(figures["processes"]) == {f"{s}#{i}" for i, s in enumerate(SERVICES)}
    assert figures["broker_cpu_ms_per_saga"] >= 0 and "plaintext" not in figures
