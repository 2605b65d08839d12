"""Service processes: each participant set runs as its own OS process, as in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from capture.settings import SERVICES, Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """This environment, with what a child command needs to see ``settings``' broker and databases."""
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.bootstrap
    env["POKESAGA_DATA_DIR"] = str(settings.data_dir.resolve())
    env["POKESAGA_PARTITIONS"] = str(settings.partitions)
    for service in SERVICES:
        url = getattr(settings, f"{service}_db_url")
        if url:
            env[f"POKESAGA_{service.upper()}_DB_URL"] = url
    return env


class ServiceProcess:
    """``pokesaga run TARGET`` in a child process, logging to a file."""

    def __init__(self, target: str, settings: Settings, log_dir: Path, extra_env: dict[str, str] | None = None):
        self.target = target
        self.settings = settings
        self.log_path = log_dir / f"{target}.log"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.terminated = False

    def env(self) -> dict[str, str]:
        return settings_env(self.settings) | self.extra_env

    def start(self) -> ServiceProcess:
        self.terminated = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "capture", "run", self.target],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as a crashed container."""
        if self.proc is not None and self.alive:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM), once: it finishes its batch, commits and leaves its group."""
        if self.proc is not None and self.alive and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, and SIGKILL if it has not left within ``timeout``."""
        if self.proc is None:
            return None
        self.terminate()
        if self.alive:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def stop_all(processes: list[ServiceProcess], timeout: float = 30) -> None:
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.stop(max(0.1, deadline - time.monotonic()))
