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
        while not [c for c in _children_of(str(tmp_path)) if "-m capture run" in c]:
            assert bench.poll() is None, bench.stderr.read() if bench.stderr else ""
            assert time.monotonic() < deadline, "the bench never started its services"
            time.sleep(0.2)
        bench.send_signal(signal.SIGTERM)
        bench.wait(120)
    finally:
        if bench.poll() is None:  # the test failed: do not leave the bench (and its broker) running
            bench.send_signal(signal.SIGINT)
            bench.wait(120)
    leftovers = [c for c in _children_of(str(tmp_path)) if "-m capture run" in c or "kafka.Kafka" in c]
    assert leftovers == []
    assert "Traceback" not in (bench.stderr.read() if bench.stderr else "")


def _catches_sigterm(pid: int) -> bool:
    """Has process ``pid`` installed a handler for SIGTERM (its caught-signals mask, from /proc)?"""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.no_database
def test_a_service_stopped_while_it_is_still_loading_exits_cleanly(tmp_path: Path) -> None:
    """An orchestrator (or a test's supervisor) may stop a container the moment it started: a SIGTERM
    that arrives while the command line is still being imported ends it with 0, not killed by the signal."""
    env = {**os.environ, "POKESAGA_DATA_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    service = subprocess.Popen(
        [sys.executable, "-m", "capture", "run", "status"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while not _catches_sigterm(service.pid):  # the entry point's first act
            assert service.poll() is None and time.monotonic() < deadline, "the service never caught SIGTERM"
            time.sleep(0.001)
        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
