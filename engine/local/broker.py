"""Broker provisioning, always a real Apache Kafka.

``KAFKA_BOOTSTRAP_SERVERS`` when set; else the broker ``POKESAGA_BROKER`` names:
``local``, a single-node KRaft broker run from the Apache Kafka jars, resolved once by the
machine's Maven and run on its JDK 17, kept in a cache between runs; or ``docker``,
testcontainers' Kafka. Unset, it is the local broker whenever it can run, and Docker only
when it cannot and an engine answers: a Docker engine with no registry behind it never
breaks the local broker. The same code serves the test fixtures and the CLI
(``pokesaga kafka start|stop|status``, ``pokesaga demo``, ``pokesaga bench``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from aiokafka.errors import KafkaError

from engine.broker import kafka
from engine.local import classdata
from engine.local.kraft import Node, NodeError, take_voter_place
from engine.local.secured import ADMIN, SecuredListener, passwords
from engine.settings import Settings

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
# The local broker's JVM options, unless KAFKA_HEAP_OPTS or KAFKA_JVM_PERFORMANCE_OPTS say otherwise (each
# replaces its part, as in Kafka's own start scripts): the test suites start dozens of short-lived brokers
# and ask for -XX:TieredStopAtLevel=1 there (tests/conftest.py).
HEAP_OPTS = "-Xms256m -Xmx768m"
PERFORMANCE_OPTS = "-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true"


def jvm_options() -> list[str]:
    """The JVM options of the local broker's nodes and tools: ours, or Kafka's environment variables."""
    heap = os.environ.get("KAFKA_HEAP_OPTS") or HEAP_OPTS
    return [*shlex.split(heap), *shlex.split(os.environ.get("KAFKA_JVM_PERFORMANCE_OPTS") or PERFORMANCE_OPTS)]


class BrokerError(Exception):
    """The broker could not be provisioned; the message says why and what to do."""


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port no server holds, for a server started later.

    Chosen below the kernel's ephemeral range: a port the kernel handed out itself (``bind(0)``)
    can be taken as the local end of any outgoing connection before the server binds it, and
    the server then fails to start. Never the same port twice in one process."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(10000, max(low, 20000))
        if port not in _HANDED_OUT and bindable(port):
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as sock:  # a crowded machine: let the kernel choose
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
    """A local KRaft Kafka on loopback, from cached jars: one node (broker + controller), or
    ``brokers`` of them, each broker and controller, in a dynamic controller quorum."""

    def __init__(
        self,
        cache_dir: Path,
        version: str = KAFKA_VERSION,
        state: Path | None = None,
        brokers: int = 1,
        secured: SecuredListener | None = None,
    ) -> None:
        """``secured``: a single broker gets that SASL_SSL listener too (see engine.local.secured)."""
        if brokers < 1:
            raise BrokerError(f"a cluster has at least one broker, not {brokers}")
        if secured is not None and brokers != 1:
            raise BrokerError("a secured listener is for a single local broker")
        self.secured = secured
        self.version = version
        self.home = cache_dir / f"kafka-{version}"
        self.lib = self.home / "lib"
        self.brokers = brokers
        # another state folder: another, separate Kafka
        self.state = state or cache_dir / ("broker" if brokers == 1 else "cluster")
        self.pid_file = self.state / "broker.pid"
        self.address_file = self.state / "bootstrap"
        self.log_file = self.state / "broker.log"
        self._writing: Path | None = None  # where this broker's JVMs write the class archive at exit
        if brokers == 1:  # the layout single-node state folders have always had
            self.nodes = [Node(self.state, 1, self._java)]
        else:
            self.nodes = [Node(self.state / f"node-{i}", i, self._java) for i in range(1, brokers + 1)]

    @classmethod
    def running(cls, cache_dir: Path) -> LocalKafka:
        """The local Kafka of the cache that runs: the cluster if it does, else the single broker."""
        nodes = len(list((cache_dir / "cluster").glob("node-*")))
        cluster = cls(cache_dir, brokers=nodes) if nodes > 1 else None
        return cluster if cluster is not None and cluster.address() else cls(cache_dir)

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

    def ensure_class_archive(self, timeout: float = 90) -> None:
        """Once per JDK and jars: a broker of its own, started and stopped cleanly, writes the
        class archive every later JVM maps (engine.local.classdata). When that fails, brokers start
        without one, and this JDK is not asked again (remove the ``.none`` file it leaves to ask)."""
        if self._writing is not None:
            return
        with classdata.writing(self.home, self.lib) as dump:
            if dump is None:
                return
            _say("archiving the Kafka classes, for faster broker starts (first run only)...")
            trial = LocalKafka(self.home.parent, self.version, state=dump.parent / "broker")
            trial._writing = dump
            try:
                trial.start(timeout)
                dump.unlink(missing_ok=True)  # the storage tool's: the broker writes its own at exit
                trial.stop(timeout)
            except BrokerError as exc:
                dump.unlink(missing_ok=True)
                _say(f"no class archive: {exc} (brokers start without one)")
            finally:
                trial.discard()

    def _java(self, *args: str) -> list[str]:
        sharing = classdata.options(self.home, self.lib, self._writing)
        return ["java", *jvm_options(), *sharing, "-cp", f"{self.lib}/*", *args]

    # -- lifecycle ------------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of the first node that runs, or None."""
        return next((pid for node in self.nodes if (pid := node.pid()) is not None), None)

    def address(self) -> str | None:
        """The bootstrap address (every node's, comma-separated) while a node answers, or None."""
        if self.pid() is None or not self.address_file.exists():
            return None
        address = self.address_file.read_text().strip()
        ports = [int(server.rsplit(":", 1)[1]) for server in address.split(",")]
        return address if any(port_open(p) for n, p in zip(self.nodes, ports, strict=True) if n.pid()) else None

    def start(self, timeout: float = 90) -> str:
        """Start every node that does not run; return the bootstrap address once all answer."""
        self.ensure_jars()
        self.ensure_class_archive(timeout)
        self.state.mkdir(parents=True, exist_ok=True)
        if self.brokers == 1:
            return self._start_single(timeout)
        other = LocalKafka(self.home.parent, self.version, self.state.parent / "broker") if self._shared() else None
        if other is not None and other.address():
            raise BrokerError(
                f"a single local broker runs already at {other.address()}: 'pokesaga kafka stop' it first"
            )
        existing = len(list(self.state.glob("node-*/data/meta.properties")))
        if existing and len(list(self.state.glob("node-*"))) != self.brokers:
            raise BrokerError(
                f"the local cluster in {self.state} has {len(list(self.state.glob('node-*')))} nodes, not "
                f"{self.brokers}: 'pokesaga kafka stop' it and remove {self.state} to change its size"
            )
        self._configure()
        cluster_file = self.state / "cluster.id"
        rejoining = []
        if not any(node.formatted() for node in self.nodes):
            cluster_id = _cluster_id()
            directories = [_cluster_id() for _ in self.nodes]
            voters = ",".join(
                f"{node.node_id}@127.0.0.1:{node.listening()[1]}:{directory}"
                for node, directory in zip(self.nodes, directories, strict=True)
            )
            for node in self.nodes:
                shutil.rmtree(node.data, ignore_errors=True)
                node.format(cluster_id, f"--initial-controllers={voters}")
            cluster_file.write_text(cluster_id)
        else:
            for node in self.nodes:
                if not node.formatted():  # its disk was lost: it comes back as a new directory
                    shutil.rmtree(node.data, ignore_errors=True)
                    node.format(cluster_file.read_text().strip(), "--no-initial-controllers")
                    rejoining.append(node)
        started = [(node, node.spawn()) for node in self.nodes if node.pid() is None]
        address = ",".join(f"127.0.0.1:{node.listening()[0]}" for node in self.nodes)
        self.address_file.write_text(address)
        self._await_ports(started, timeout)
        for node in rejoining:
            take_voter_place(self._java, address, node)
        self._await_brokers(address, timeout)
        return address

    def _await_brokers(self, address: str, timeout: float) -> None:
        """Until every broker has registered: a topic created before would get fewer replicas."""
        deadline = time.monotonic() + timeout
        while (found := asyncio.run(_brokers(address))) < self.brokers:
            if time.monotonic() > deadline:
                raise BrokerError(f"{found} of {self.brokers} brokers up after {timeout:.0f}s; see {self.state}")
            time.sleep(0.2)

    def _shared(self) -> bool:
        return self.state == self.home.parent / "cluster"

    def _configure(self) -> None:
        """Every node's server.properties: the ports it had (a controller's endpoint is part of
        the quorum's own metadata, and clients know the brokers by these addresses), else new ones."""
        previous = [node.ports() for node in self.nodes]
        ports = [pair for pair in previous if pair is not None]
        if len(ports) == len(self.nodes):
            running = {p for node, pair in zip(self.nodes, ports, strict=True) if node.pid() for p in pair}
            taken = sorted(p for pair in ports for p in pair if p not in running and not bindable(p))
            if taken:
                raise BrokerError(f"ports {taken} of the local cluster in {self.state} are taken by another process")
        else:
            ports = [(free_port(), free_port()) for _ in self.nodes]
        controllers = ",".join(f"127.0.0.1:{controller}" for _, controller in ports)
        for node, (port, controller) in zip(self.nodes, ports, strict=True):
            node.folder.mkdir(parents=True, exist_ok=True)
            node.config.write_text(self._cluster_properties(node, port, controller, controllers))

    def _await_ports(self, started: list[tuple[Node, subprocess.Popen[bytes]]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node, proc in started:
            port = node.listening()[0]
            while not port_open(port):
                if proc.poll() is not None:
                    raise BrokerError(f"broker {node.node_id} exited with code {proc.returncode}; see {node.log_file}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(
                        f"broker {node.node_id} did not answer within {timeout:.0f}s; see {node.log_file}"
                    )
                time.sleep(0.2)

    def _start_single(self, timeout: float) -> str:
        running = self.address()
        if running:
            return running
        config = self.state / "server.properties"
        port, controller = self._previous_ports(config) or (free_port(), free_port())
        if self.secured is not None and not self.secured.keystore.exists():
            self.secured.make_certificates()
        config.write_text(self._properties(port, controller))
        if not (self.state / "data" / "meta.properties").exists():
            shutil.rmtree(self.state / "data", ignore_errors=True)
            self.format_storage(config, _cluster_id(), *(self.secured.format_arguments() if self.secured else ()))
        node = self.nodes[0]
        proc = node.spawn()
        self._await_ports([(node, proc)], timeout)
        address = f"127.0.0.1:{port}"
        self.address_file.write_text(address)
        return address

    def format_storage(self, config: Path, cluster_id: str, *extra: str) -> None:
        """``kafka-storage format`` for ``config`` (a single node: a static quorum of one)."""
        try:
            Node(config.parent, 1, self._java).format(cluster_id, *extra)
        except NodeError as exc:
            raise BrokerError(str(exc).replace("node 1's", "the broker's")) from None

    @staticmethod
    def _previous_ports(config: Path) -> tuple[int, int] | None:
        """The ports this broker had, when both are free again: a restarted broker keeps its
        address, so the clients that knew it reconnect by themselves."""
        if not config.exists():
            return None
        found = re.search(LISTENERS, config.read_text(), re.M)
        if found is None:
            return None
        ports = int(found[1]), int(found[2])
        return ports if all(bindable(p) for p in ports) else None

    def stop(self, timeout: float = 30) -> bool:
        """Stop every node cleanly (SIGTERM, then SIGKILL to those still running ``timeout`` seconds
        later: one deadline for the whole cluster, not one per node); False if none ran."""
        stopped = [node for node in self.nodes if node.pid() is not None]
        for node in stopped:  # all at once: the last controllers would wait for a quorum that is gone
            node.send(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in stopped:
            node.kill(signal.SIGTERM, max(0.0, deadline - time.monotonic()))
        if stopped:
            self.address_file.unlink(missing_ok=True)
        return bool(stopped)

    def discard(self) -> None:
        """SIGKILL every node, for a cluster whose state is thrown away next: a clean stop's
        leadership moves and log flushes would serve no one."""
        for node in self.nodes:
            node.kill(signal.SIGKILL)
        self.address_file.unlink(missing_ok=True)

    # -- one node of a cluster, for failover drills ---------------------------------------

    def kill_node(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Stop node ``node_id`` with ``sig`` (SIGKILL: as a machine that dies)."""
        self.nodes[node_id - 1].kill(sig)

    def lose_disk(self, node_id: int) -> None:
        """Node ``node_id`` dies and its disk is lost: killed, its data folder emptied.
        ``start`` brings it back empty; it re-replicates from the others."""
        node = self.nodes[node_id - 1]
        node.kill(signal.SIGKILL)
        shutil.rmtree(node.data, ignore_errors=True)

    def _properties(self, port: int, controller: int) -> str:
        """A single node's configuration: a static quorum of one."""
        secured = [self.secured.listener()] if self.secured else []
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller}",
                ",".join([f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}", *secured]),
                ",".join(
                    [f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}"]
                    + ([self.secured.advertised()] if self.secured else [])
                ),
                *_COMMON,
                *(self.secured.properties() if self.secured else []),
                f"log.dirs={self.state / 'data'}",
                *_internal_topics(1),
                "",
            ]
        )

    def _cluster_properties(self, node: Node, port: int, controller: int, controllers: str) -> str:
        """A cluster node's configuration: a dynamic quorum, found through every controller."""
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={node.node_id}",
                f"controller.quorum.bootstrap.servers={controllers}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                *_COMMON,
                f"log.dirs={node.data}",
                *_internal_topics(self.brokers),
                "",
            ]
        )


LISTENERS = r"^listeners=PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)(?:,\S+)?$"  # a secured one may follow
_COMMON = [
    "controller.listener.names=CONTROLLER",
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "inter.broker.listener.name=PLAINTEXT",
    "num.partitions=3",
    "offsets.topic.num.partitions=6",
    "group.initial.rebalance.delay.ms=0",
    "log.retention.hours=168",
]


def _internal_topics(brokers: int) -> list[str]:
    """Replication of the broker's own topics (group offsets, transactions, share groups) and of
    auto-created ones: as pokesaga replicates its topics (engine.broker.kafka.replicas_for)."""
    replicas = min(3, brokers)
    isr = max(1, replicas - 1)
    return [
        f"offsets.topic.replication.factor={replicas}",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={isr}",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={isr}",
        *([f"default.replication.factor={replicas}", f"min.insync.replicas={isr}"] if brokers > 1 else []),
    ]


async def _brokers(address: str) -> int:
    """How many brokers the cluster's metadata lists (0 while none answers)."""
    admin = kafka.admin_client(address, request_timeout_ms=5000)
    try:
        await admin.start()
        return len((await admin.describe_cluster())["brokers"])
    except KafkaError:
        return 0
    finally:
        await admin.close()


def _cluster_id(new_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, as ``kafka-storage random-uuid``
    prints. Like Kafka's Uuid.randomUuid, draw again while it starts with '-': such an id
    reads as an option on a command line."""
    while True:
        encoded = base64.urlsafe_b64encode(new_uuid().bytes).decode().rstrip("=")
        if not encoded.startswith("-"):
            return encoded


def secured_kafka(
    cache_dir: Path, principals: Iterable[str], state: Path | None = None
) -> tuple[LocalKafka, SecuredListener]:
    """The local secured broker (``pokesaga kafka start --secure``), in ``state`` (default: the cache's
    ``secured`` folder), apart from the plain one: a SASL_SSL listener with Kafka's standard authorizer,
    a SCRAM user for each of ``principals`` and ``admin`` (its super user), their passwords made on
    its first start and kept in ``credentials/<principal>.env`` (see engine.local.secured).

    Users are written into its storage when it is first formatted: a principal added later needs
    the state folder removed (and the broker made anew)."""
    state = state or cache_dir / "secured"
    port_file = state / "secured.port"
    port = int(port_file.read_text()) if port_file.exists() else free_port()
    users = passwords(state / "credentials", [*principals, ADMIN])
    listener = SecuredListener(state / "tls", port, users, authorizer=True)
    state.mkdir(parents=True, exist_ok=True)
    port_file.write_text(str(port))
    listener.write_credentials(state / "credentials")
    return LocalKafka(cache_dir, state=state, secured=listener), listener


BROKERS = ("local", "docker")


def docker_available() -> bool:
    """True when a Docker engine answers (not merely when the client is installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def local_can_run(cache_dir: Path) -> bool:
    """A JDK to run the jars, and the jars cached or Maven to resolve them."""
    jars = (cache_dir / f"kafka-{KAFKA_VERSION}" / "lib" / ".complete").exists()
    return shutil.which("java") is not None and (jars or shutil.which("mvn") is not None)


def chosen_broker(settings: Settings, environ: Mapping[str, str] = os.environ) -> str:
    """``local`` or ``docker``: ``POKESAGA_BROKER`` when set; else the local broker when it can
    run, else Docker when an engine answers, else local (whose error says what is missing)."""
    asked = environ.get("POKESAGA_BROKER", "").strip().lower()
    if asked:
        if asked not in BROKERS:
            raise BrokerError(f"POKESAGA_BROKER must be one of {', '.join(BROKERS)}, not {asked!r}")
        return asked
    if local_can_run(settings.kafka_cache_dir):
        return "local"
    return "docker" if docker_available() else "local"


@contextlib.contextmanager
def _docker_kafka() -> Iterator[str]:
    """testcontainers' Kafka; any failure to start it is one line naming the way out."""
    way_out = "set POKESAGA_BROKER=local (a JDK 17 and Maven) or KAFKA_BOOTSTRAP_SERVERS to a running broker"
    try:
        from testcontainers.kafka import KafkaContainer  # optional: pip install 'pokesaga[docker]'
    except ImportError:
        raise BrokerError(
            f"the docker broker needs testcontainers (pip install 'pokesaga[docker]'); or {way_out}"
        ) from None
    if not docker_available():
        raise BrokerError(f"the docker broker needs a Docker engine and none answers ('docker info'); {way_out}")
    container = KafkaContainer().with_kraft()
    try:
        container.start()
    except Exception as exc:  # an image that cannot be pulled, a container that never answers: all said alike
        with contextlib.suppress(Exception):
            container.stop()
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise BrokerError(f"testcontainers' Kafka could not start: {reason}; {way_out}") from None
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()


@contextlib.contextmanager
def provisioned(settings: Settings, state: Path | None = None, broker: str | None = None) -> Iterator[str]:
    """A bootstrap address for the duration of the block; stops only what it started.

    ``state``: run a local broker of its own from that folder (a new, empty broker
    when the folder is), rather than the shared one of the cache. ``broker``: ``local`` or
    ``docker``, over ``POKESAGA_BROKER`` (see ``chosen_broker``).
    """
    if settings.kafka_bootstrap_servers:
        yield settings.kafka_bootstrap_servers
        return
    if (broker or chosen_broker(settings)) == "docker":
        with _docker_kafka() as address:
            yield address
        return
    local = LocalKafka(settings.kafka_cache_dir, state=state)
    already = local.address()
    address = already or local.start()
    try:
        yield address
    finally:
        if not already:
            local.stop()
