"""The broker chosen (POKESAGA_BROKER, else what can run), and the local broker's cluster id:
never one that reads as an option to ``kafka-storage format``."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.settings import Settings
from engine.local.broker import (
    HEAP_OPTS,
    PERFORMANCE_OPTS,
    BrokerError,
    LocalKafka,
    _cluster_id,
    bindable,
    chosen_broker,
    free_port,
    jvm_options,
    provisioned,
)
from engine.local.kraft import Node

DASH = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # URL-safe base64 of a first byte 0xF8..0xFB is '-'
PLAIN = uuid.UUID("6f1c2b8e-52a4-4bd2-8f0c-3d5b1f0c1a77")


def encoded(value: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


def drawing(*values: uuid.UUID) -> tuple[list[uuid.UUID], Iterator[uuid.UUID]]:
    drawn: list[uuid.UUID] = []

    def draws() -> Iterator[uuid.UUID]:
        for value in values:
            drawn.append(value)
            yield value

    return drawn, draws()


def test_a_uuid_whose_encoding_starts_with_a_dash_is_drawn_again() -> None:
    assert encoded(DASH).startswith("-")
    drawn, source = drawing(DASH, DASH, PLAIN)
    cluster_id = _cluster_id(lambda: next(source))
    assert cluster_id == encoded(PLAIN)
    assert drawn == [DASH, DASH, PLAIN]


def test_a_uuid_whose_encoding_starts_otherwise_is_kept() -> None:
    drawn, source = drawing(PLAIN)
    assert _cluster_id(lambda: next(source)) == encoded(PLAIN)
    assert drawn == [PLAIN]


def test_random_cluster_ids_never_start_with_a_dash() -> None:
    # One uuid4 in 64 encodes to a leading '-': among 5000, without the redraw, some would.
    ids = [_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)


def test_the_storage_tool_takes_an_id_starting_with_a_dash(tmp_path: Path) -> None:
    """The id goes as one ``--cluster-id=ID`` argument: even a leading '-' formats (Kafka's own jars)."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("the local broker's jars need a JDK and Maven")
    local = LocalKafka(Settings().kafka_cache_dir, state=tmp_path)
    local.ensure_jars()
    config = tmp_path / "server.properties"
    config.write_text(local._properties(free_port(), free_port()))
    local.format_storage(config, encoded(DASH))
    meta = (tmp_path / "data" / "meta.properties").read_text()
    assert f"cluster.id={encoded(DASH)}" in meta.splitlines()


def test_a_local_cluster_runs_a_dynamic_quorum_of_every_node_on_loopback(tmp_path: Path) -> None:
    """Each node broker and controller; the quorum found through every controller (KIP-853: no
    static voter list, so a node that lost its disk can take its voter's place again)."""
    local = LocalKafka(Settings().kafka_cache_dir, state=tmp_path, brokers=3)
    local._configure()
    configs = [dict(line.split("=", 1) for line in n.config.read_text().splitlines() if line) for n in local.nodes]
    controllers = {c["controller.quorum.bootstrap.servers"] for c in configs}
    assert len(controllers) == 1
    assert sorted(controllers.pop().split(",")) == sorted(f"127.0.0.1:{n.listening()[1]}" for n in local.nodes)
    for node, config in zip(local.nodes, configs, strict=True):
        assert config["node.id"] == str(node.node_id) and config["process.roles"] == "broker,controller"
        assert "controller.quorum.voters" not in config
        assert all(url.split("//")[1].startswith("127.0.0.1:") for url in config["listeners"].split(","))
        assert config["offsets.topic.replication.factor"] == config["default.replication.factor"] == "3"
        assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == "2"
        assert config["log.dirs"] == str(node.data)
    before = [n.listening() for n in local.nodes]
    local._configure()  # configured again (a restart): the same ports, which clients and the quorum know
    assert [n.listening() for n in local.nodes] == before


DEAF = """import signal, socket, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
listening = socket.create_server(("127.0.0.1", 0))
print(listening.getsockname()[1], flush=True)
time.sleep(600)"""


def deaf_nodes(local: LocalKafka) -> list[tuple[subprocess.Popen[str], int]]:
    """A process per node that the node's pid file names, that listens on a port of its own and
    ignores SIGTERM, as a Kafka node does whose clean shutdown waits for a controller that is
    gone; each with its port, returned once it ignores SIGTERM."""
    processes = []
    for node in local.nodes:
        node.folder.mkdir(parents=True)
        argv = [sys.executable, "-c", DEAF, "kafka.Kafka", str(node.config)]  # what Node.pid() looks for
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        port = int(process.stdout.readline())  # SIGTERM ignored from now on
        node.pid_file.write_text(str(process.pid))
        processes.append((process, port))
    return processes


def gone(process: subprocess.Popen[str]) -> bool:
    """``process`` has ended (reaped here unless the node's kill reaped it already)."""
    with contextlib.suppress(ChildProcessError):
        process.wait(5)
    return not Path(f"/proc/{process.pid}").exists()


def test_a_cluster_stop_gives_all_its_nodes_one_deadline_not_one_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = LocalKafka(Settings().kafka_cache_dir, state=tmp_path, brokers=3)
    processes = deaf_nodes(local)
    given: list[float] = []
    kill = Node.kill

    def spied(node: Node, sig: int = signal.SIGKILL, timeout: float = 30) -> bool:
        given.append(timeout)
        return kill(node, sig, timeout)

    monkeypatch.setattr(Node, "kill", spied)
    assert local.stop(timeout=1)
    assert given[0] <= 1 and given[1:] == [0, 0]  # the first waited the whole deadline out: none left for the others
    assert [node.pid() for node in local.nodes] == [None] * 3
    # Ended when stop returns, their ports free at once: the cluster can start again right away.
    assert [port for _, port in processes if not bindable(port)] == []
    assert all(gone(process) for process, _ in processes)  # they ignore SIGTERM: SIGKILLed


def test_a_discarded_cluster_is_killed_without_waiting_for_a_clean_stop(tmp_path: Path) -> None:
    local = LocalKafka(Settings().kafka_cache_dir, state=tmp_path, brokers=3)
    processes = deaf_nodes(local)
    local.discard()
    assert [node.pid() for node in local.nodes] == [None] * 3
    assert [port for _, port in processes if not bindable(port)] == []
    assert all(gone(process) for process, _ in processes)  # they ignore SIGTERM: SIGKILLed


def test_a_single_broker_keeps_its_static_quorum_of_one(tmp_path: Path) -> None:
    local = LocalKafka(Settings().kafka_cache_dir, state=tmp_path)
    config = dict(line.split("=", 1) for line in local._properties(9092, 9093).splitlines() if line)
    assert config["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert config["offsets.topic.replication.factor"] == "1" and "default.replication.factor" not in config
    assert local.nodes[0].folder == tmp_path  # the layout single-broker state folders always had


def test_kafkas_own_jvm_variables_replace_the_local_brokers_options_each_its_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_HEAP_OPTS", "-Xms64m -Xmx400m")
    monkeypatch.setenv("KAFKA_JVM_PERFORMANCE_OPTS", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
    java = LocalKafka(Settings().kafka_cache_dir, state=tmp_path)._java("kafka.Kafka")
    assert java[1:5] == ["-Xms64m", "-Xmx400m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
    assert not any("768m" in o or "G1" in o for o in java)  # replaced, not added to: two GCs would not start
    monkeypatch.delenv("KAFKA_HEAP_OPTS")
    monkeypatch.setenv("KAFKA_JVM_PERFORMANCE_OPTS", "")  # empty: as unset
    assert jvm_options() == [*HEAP_OPTS.split(), *PERFORMANCE_OPTS.split()]


def test_the_local_broker_is_chosen_whenever_it_can_run_docker_engine_or_not() -> None:
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("the local broker needs a JDK and Maven")
    assert chosen_broker(Settings(), environ={}) == "local"


def test_the_broker_asked_for_is_the_one_chosen() -> None:
    assert chosen_broker(Settings(), environ={"POKESAGA_BROKER": "docker"}) == "docker"
    assert chosen_broker(Settings(), environ={"POKESAGA_BROKER": " Local "}) == "local"


def test_a_broker_of_no_known_kind_is_refused_in_one_line() -> None:
    with pytest.raises(BrokerError, match="POKESAGA_BROKER must be one of local, docker, not 'kraft'"):
        chosen_broker(Settings(), environ={"POKESAGA_BROKER": "kraft"})


def test_with_no_jdk_and_no_engine_the_local_broker_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn, no docker
    monkeypatch.delenv("POKESAGA_BROKER", raising=False)
    settings = Settings(kafka_cache_dir=tmp_path / "cache")
    assert chosen_broker(settings) == "local"
    with (
        pytest.raises(BrokerError, match="'mvn' not found: the local broker needs Maven and a JDK 17"),
        provisioned(settings, state=tmp_path / "broker"),
    ):
        pass


def test_the_docker_broker_with_no_engine_answering_is_one_line_at_once(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "POKESAGA_BROKER": "docker",
        "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
        "POKESAGA_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    cli = Path(sys.executable).parent / "pokesaga"
    proc = subprocess.run([str(cli), "demo", "--sagas", "1"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "pokesaga: error: the docker broker needs a Docker engine and none answers ('docker info'); "
        "set POKESAGA_BROKER=local (a JDK 17 and Maven) or KAFKA_BOOTSTRAP_SERVERS to a running broker"
    ]
