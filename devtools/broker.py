"""Broker provisioning, always a real Apache Kafka.

``KAFKA_BOOTSTRAP_SERVERS`` when set; else testcontainers' Kafka when a Docker engine
answers; else a local single-node KRaft broker run from the Apache Kafka jars, resolved
once by the machine's Maven and run on its JDK 17, kept in a cache between runs. The
same code serves the test fixtures and the CLI (``pokesaga kafka start|stop|status``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from capture.settings import Settings

KAFKA_VERSION = "4.1.1"
SLF4J_VERSION = "1.7.36"  # the slf4j-api the Kafka jars use
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>pokesaga</groupId><artifactId>local-kafka</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""
JVM_OPTS = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]


class BrokerError(Exception):
    """The broker could not be provisioned; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing holds ``host:port``: a server could listen there."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _say(message: str) -> None:
    print(f"pokesaga: {message}", file=sys.stderr, flush=True)


class LocalKafka:
    """A single-node KRaft broker (broker + controller) on loopback, from cached jars."""

    def __init__(self, cache_dir: Path, version: str = KAFKA_VERSION, state: Path | None = None) -> None:
        self.version = version
        self.home = cache_dir / f"kafka-{version}"
        self.lib = self.home / "lib"
        self.state = state or cache_dir / "broker"  # another state folder: another, separate broker
        self.pid_file = self.state / "broker.pid"
        self.address_file = self.state / "bootstrap"
        self.log_file = self.state / "broker.log"

    # -- jars -----------------------------------------------------------------------

    def ensure_jars(self) -> None:
        """Resolve the Kafka jars with Maven, once; later runs reuse the cache."""
        done = self.lib / ".complete"
        if done.exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one download even if several processes ask
            if done.exists():
                return
            for tool in ("mvn", "java"):
                if shutil.which(tool) is None:
                    raise BrokerError(
                        f"'{tool}' not found: the local broker needs Maven and a JDK 17 "
                        "(or set KAFKA_BOOTSTRAP_SERVERS to a running broker)"
                    )
            (self.home / "pom.xml").write_text(POM.format(kafka=self.version, slf4j=SLF4J_VERSION))
            _say(f"resolving Apache Kafka {self.version} jars with Maven (first run only)...")
            shutil.rmtree(self.lib, ignore_errors=True)
            proc = subprocess.run(
                [
                    "mvn",
                    "-B",
                    "-q",
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={self.lib}",
                    "-DincludeScope=runtime",
                ],
                cwd=self.home,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
                raise BrokerError("Maven could not resolve the Kafka jars: " + " | ".join(tail))
            done.touch()

    def _java(self, *args: str) -> list[str]:
        return ["java", *JVM_OPTS, "-cp", f"{self.lib}/*", *args]

    # -- lifecycle ------------------------------------------------------------------

    def pid(self) -> int | None:
        """The broker's pid if it runs (a stale pid file, or a reused pid, is not a broker)."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"kafka.Kafka" in cmdline and str(self.state).encode() in cmdline else None

    def address(self) -> str | None:
        """The bootstrap address of the running broker, or None."""
        if self.pid() is None or not self.address_file.exists():
            return None
        address = self.address_file.read_text().strip()
        return address if port_open(int(address.rsplit(":", 1)[1])) else None

    def start(self, timeout: float = 90) -> str:
        """Start the broker unless it runs already; return its bootstrap address."""
        running = self.address()
        if running:
            return running
        self.ensure_jars()
        self.state.mkdir(parents=True, exist_ok=True)
        config = self.state / "server.properties"
        port, controller = self._previous_ports(config) or (free_port(), free_port())
        config.write_text(self._properties(port, controller))
        if not (self.state / "data" / "meta.properties").exists():
            shutil.rmtree(self.state / "data", ignore_errors=True)
            self.format_storage(config, _cluster_id())
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self._java("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "kafka.Kafka", str(config)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the command that started it
            )
        self.pid_file.write_text(str(proc.pid))
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while not port_open(port):
            if proc.poll() is not None:
                raise BrokerError(f"the broker exited with code {proc.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the broker did not answer within {timeout:.0f}s; see {self.log_file}")
            time.sleep(0.2)
        self.address_file.write_text(address)
        return address

    def format_storage(self, config: Path, cluster_id: str) -> None:
        """``kafka-storage format`` for ``config``. The id goes as ``--cluster-id=ID``, one
        argument: an id starting with '-' must not read as an option."""
        fmt = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)),
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise BrokerError("formatting the broker's storage failed: " + fmt.stderr.strip()[-300:])

    @staticmethod
    def _previous_ports(config: Path) -> tuple[int, int] | None:
        """The ports this broker had, when both are free again: a restarted broker keeps its
        address, so the clients that knew it reconnect by themselves."""
        if not config.exists():
            return None
        found = re.search(r"^listeners=PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)$", config.read_text(), re.M)
        if found is None:
            return None
        ports = int(found[1]), int(found[2])
        return ports if all(bindable(p) for p in ports) else None

    def stop(self, timeout: float = 30) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``); False if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        self.address_file.unlink(missing_ok=True)
        return True

    def _properties(self, port: int, controller: int) -> str:
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.state / 'data'}",
                "num.partitions=3",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=6",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "",
            ]
        )


def _cluster_id(new_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, as ``kafka-storage random-uuid``
    prints. Like Kafka's Uuid.randomUuid, draw again while it starts with '-': such an id
    reads as an option on a command line."""
    while True:
        encoded = base64.urlsafe_b64encode(new_uuid().bytes).decode().rstrip("=")
        if not encoded.startswith("-"):
            return encoded


def docker_available() -> bool:
    """True when a Docker engine answers (not merely when the client is installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def provisioned(settings: Settings, state: Path | None = None) -> Iterator[str]:
    """A bootstrap address for the duration of the block; stops only what it started.

    ``state``: run a local broker of its own from that folder (a new, empty broker
    when the folder is), rather than the shared one of the cache.
    """
    if settings.kafka_bootstrap_servers:
        yield settings.kafka_bootstrap_servers
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer  # optional: pip install 'pokesaga[docker]'

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    local = LocalKafka(settings.kafka_cache_dir, state=state)
    already = local.address()
    address = already or local.start()
    try:
        yield address
    finally:
        if not already:
            local.stop()
