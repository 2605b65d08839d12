"""Stopping a long command with SIGTERM leaves nothing behind: no service process, no broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _children_of(marker: str) -> list[str]:
    """Command lines of live processes whose command line or environment mentions ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                environ = (proc / "environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline or marker in environ:
                found.append(cmdline)
    return found


@pytest.mark.no_database
def test_a_terminated_bench_stops_its_services_and_its_private_broker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["TMPDIR"] = str(tmp_path)  # the private broker's state lives here: a marker to look for
    bench = subprocess.Popen(
        [sys.executable, "-m", "capture.cli", "bench", "--sagas", "100000", "--warmup", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not [c for c in _children_of(str(tmp_path)) if "capture.cli run" in c]:
            assert bench.poll() is None, bench.stderr.read() if bench.stderr else ""
            assert time.monotonic() < deadline, "the bench never started its services"
            time.sleep(0.2)
        bench.send_signal(signal.SIGTERM)
        bench.wait(120)
    finally:
        if bench.poll() is None:  # the test failed: do not leave the bench (and its broker) running
            bench.send_signal(signal.SIGINT)
            bench.wait(120)
    leftovers = [c for c in _children_of(str(tmp_path)) if "capture.cli run" in c or "kafka.Kafka" in c]
    assert leftovers == []
    assert "Traceback" not in (bench.stderr.read() if bench.stderr else "")
