"""One node of a local KRaft cluster: a JVM running Kafka as broker and controller, from a
folder of its own (``server.properties``, ``data/``, ``broker.pid``, ``broker.log``).

A cluster of several nodes runs a dynamic controller quorum (KIP-853, Kafka 3.9+): its
voters are formatted with ``--initial-controllers``, each voter known by its id *and* the id
of its metadata directory. A node whose disk is lost cannot just be formatted again with its
old id: as a voter with an empty log it could help elect a leader that misses committed
metadata (KAFKA-14077). So it is formatted with ``--no-initial-controllers``, starts as an
observer, catches up, and then takes its own place in the voter set: the voter of its lost
directory removed, itself (its new directory) added (``Quorum.java``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

QUORUM_TOOL = Path(__file__).with_name("Quorum.java")
KILLED_WITHIN = 30.0  # a SIGKILLed JVM lets go of its memory, then of its sockets: seconds at worst


class NodeError(Exception):
    """A node could not be formatted, started or joined; the message says why."""


class Node:
    """A Kafka process (broker + controller) of a local cluster."""

    def __init__(self, folder: Path, node_id: int, java: Callable[..., list[str]]) -> None:
        self.folder = folder
        self.node_id = node_id
        self.java = java
        self.config = folder / "server.properties"
        self.data = folder / "data"
        self.pid_file = folder / "broker.pid"
        self.log_file = folder / "broker.log"

    def pid(self) -> int | None:
        """The node's pid if it runs (a stale pid file, or a reused pid, is not this node)."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"kafka.Kafka" in cmdline and str(self.config).encode() in cmdline else None

    def ports(self) -> tuple[int, int] | None:
        """The client and controller ports of its configuration, if it has one."""
        if not self.config.exists():
            return None
        found = re.search(
            r"^listeners=PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)(?:,\S+)?$", self.config.read_text(), re.M
        )
        return (int(found[1]), int(found[2])) if found else None

    def listening(self) -> tuple[int, int]:
        """The client and controller ports it is configured with."""
        ports = self.ports()
        if ports is None:
            raise NodeError(f"node {self.node_id} has no configuration in {self.config}")
        return ports

    def formatted(self) -> bool:
        return (self.data / "meta.properties").exists()

    def directory_id(self) -> str:
        found = re.search(r"^directory\.id=(\S+)$", (self.data / "meta.properties").read_text(), re.M)
        if found is None:
            raise NodeError(f"node {self.node_id}: no directory.id in {self.data / 'meta.properties'}")
        return found[1]

    def format(self, cluster_id: str, *quorum: str) -> None:
        """``kafka-storage format``; ``quorum``: ``--initial-controllers=…`` or ``--no-initial-controllers``
        for a dynamic quorum, nothing for a static one. The id goes as ``--cluster-id=ID``, one
        argument: an id starting with '-' must not read as an option."""
        fmt = subprocess.run(
            self.java(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self.config), *quorum
            ),
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            said = (
                fmt.stderr.strip() or fmt.stdout.strip() or f"exit code {fmt.returncode}"
            )  # the JVM's own errors: stdout
            raise NodeError(f"formatting node {self.node_id}'s storage failed: " + " | ".join(said.splitlines())[-300:])

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the JVM (it outlives the command that started it); returns at once."""
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self.java("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "kafka.Kafka", str(self.config)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def send(self, sig: int) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, sig)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> bool:
        """Send ``sig`` and wait for the process to end (SIGKILL after ``timeout``); False if none ran.
        Returns once it has ended, SIGKILLed or not: until then it holds its ports, and a node
        started again at once would find them taken."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, sig)
        if not _ended(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _ended(pid, KILLED_WITHIN)
        self.pid_file.unlink(missing_ok=True)
        return True


def _ended(pid: int, timeout: float) -> bool:
    """Whether ``pid`` ended within ``timeout`` (reaped here when it is our child; a zombie has ended)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def quorum(java: Callable[..., list[str]], bootstrap: str, *args: str, timeout: float = 60) -> str:
    """Run Quorum.java against ``bootstrap``; its output."""
    done = subprocess.run(java(str(QUORUM_TOOL), bootstrap, *args), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise NodeError(f"Quorum {' '.join(args)}: " + (done.stderr.strip().splitlines() or ["failed"])[-1][-300:])
    return done.stdout


def take_voter_place(java: Callable[..., list[str]], bootstrap: str, node: Node, timeout: float = 120) -> None:
    """``node``, formatted anew after losing its disk and started, becomes a voter again in place
    of its lost directory; tried until the leader accepts (it must have caught up first)."""
    controller = node.listening()[1]
    directory = node.directory_id()
    deadline = time.monotonic() + timeout
    while True:
        try:
            quorum(java, bootstrap, "replace", str(node.node_id), directory, "127.0.0.1", str(controller))
            voters = quorum(java, bootstrap, "describe")
            if f"voter {node.node_id} {directory} " in voters:
                return
        except (NodeError, subprocess.TimeoutExpired) as exc:
            if time.monotonic() > deadline:
                raise NodeError(f"node {node.node_id} did not rejoin the controller quorum: {exc}") from None
        if time.monotonic() > deadline:
            raise NodeError(f"node {node.node_id} did not rejoin the controller quorum within {timeout:.0f}s")
        time.sleep(1)
