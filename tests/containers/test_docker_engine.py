"""A Docker engine that can pull nothing changes nothing for the tools that need a broker: they
run the local one (POKESAGA_BROKER unset), and asking for testcontainers' is one clear line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from engine.local.broker import docker_available, free_port


def pokesaga(engine: dict[str, str], tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in engine.items() if not k.startswith(("POKESAGA_", "KAFKA_"))}
    env |= {"POKESAGA_DATA_DIR": str(tmp_path / "data"), "POKESAGA_TRACKER_PORT": str(free_port()), **extra}
    cli = Path(sys.executable).parent / "pokesaga"
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=300)


def with_engine(engine: dict[str, str]) -> bool:
    saved = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = engine["DOCKER_HOST"]
    try:
        return docker_available()
    finally:
        if saved is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = saved


def test_demo_runs_on_the_local_broker_while_a_docker_engine_answers(engine: dict[str, str], tmp_path: Path) -> None:
    assert with_engine(engine)  # the engine answers: before, testcontainers was chosen, and failed
    demo = pokesaga(engine, tmp_path, "demo", "--sagas", "4", "--seed", "7", "--timeout", "120")
    assert demo.returncode == 0, demo.stderr[-3000:]
    # The local broker answered (a machine's first broker also says it archives Kafka's classes).
    assert re.search(r"^broker: 127\.0\.0\.1:\d+$", demo.stderr, re.M), demo.stderr[:500]
    assert "testcontainers" not in demo.stderr, demo.stderr[:500]
    assert "4/4 sagas at an outcome" in demo.stderr + demo.stdout


def test_bench_runs_on_a_local_broker_of_its_own_while_a_docker_engine_answers(
    engine: dict[str, str], tmp_path: Path
) -> None:
    bench = pokesaga(engine, tmp_path, "bench", "--sagas", "30", "--concurrency", "10", "--warmup", "0")
    assert bench.returncode == 0, bench.stderr[-3000:]
    figures = json.loads(bench.stdout.strip().splitlines()[-1])
    assert figures["sagas"] == 30


def test_testcontainers_asked_for_with_nothing_to_pull_is_one_line(engine: dict[str, str], tmp_path: Path) -> None:
    demo = pokesaga(engine, tmp_path, "demo", "--sagas", "1", POKESAGA_BROKER="docker")
    assert demo.returncode == 1
    lines = demo.stderr.strip().splitlines()
    assert len(lines) == 1, demo.stderr
    assert lines[0].startswith("pokesaga: error: testcontainers' Kafka could not start: "), lines[0]
    assert lines[0].endswith(
        "set POKESAGA_BROKER=local (a JDK 17 and Maven) or KAFKA_BOOTSTRAP_SERVERS to a running broker"
    )
