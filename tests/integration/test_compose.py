"""The container path, checked without a Docker engine: docker-compose.yml, the Dockerfile,
the Prometheus configuration and the instructions in docs/containers.md against each other and the code.
That the image holds and runs every command compose gives it: test_image.py."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from engine.local.broker import free_port
from engine.ops import acls
from engine.settings.variables import field_variables, known_variables
from tests.support import doc_section

pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
CONTAINERS: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
OURS = {name: c for name, c in CONTAINERS.items() if c.get("image", "").startswith("pokesaga")}


def setting_names() -> set[str]:
    """Every environment variable Settings reads (POKESAGA_<SERVICE>_DB_URL of each service included)."""
    names = set(known_variables(Settings))
    for name, field in Settings.model_fields.items():
        names |= set(field_variables(name, field))  # KAFKA_… too
    return names


def is_setting(variable: str) -> bool:
    """``variable`` is read by Settings, nested ones (``POKESAGA_RETRY__MAXIMUM_ATTEMPTS``) included."""
    top, *nested = variable.split("__")
    if top not in setting_names():
        return False
    if not nested:
        return True
    field = Settings.model_fields.get(top.removeprefix("POKESAGA_").lower())
    model = getattr(field, "annotation", None)
    fields = getattr(model, "model_fields", None)
    return fields is None or nested[0].lower() in fields


def settings_in(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings as a container's process reads them from ``env``, nothing of this process's."""
    with monkeypatch.context() as patched:
        for variable in [v for v in os.environ if v.startswith(("POKESAGA_", "KAFKA_"))]:
            patched.delenv(variable)
        for variable, value in env.items():
            patched.setenv(variable, value)
        return Settings()


def test_every_service_of_the_design_has_its_container() -> None:
    for service in SERVICES:
        assert CONTAINERS[service]["command"] == ["pokesaga", "run", service]
        assert CONTAINERS[service]["image"].startswith("pokesaga")
    kraft = CONTAINERS["kafka"]
    assert kraft["image"].startswith("apache/kafka:")
    assert set(kraft["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert CONTAINERS["postgres"]["image"].startswith("postgres:")
    assert CONTAINERS["prometheus"]["image"].startswith("prom/prometheus")
    assert CONTAINERS["cli"]["profiles"] == ["cli"]  # run on demand, never by `up`
    assert CONTAINERS["topics"]["restart"] == "no"  # a one-shot job
    for service in SERVICES:
        assert CONTAINERS[service]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_the_topic_job_creates_every_topic_the_code_uses() -> None:
    script = "\n".join(CONTAINERS["topics"]["command"])
    loop = re.search(r"for topic in (.*?); do", script, re.S)
    assert loop is not None
    assert loop[1].replace("\\", " ").split() == CAPTURE.all_topics()
    partitions = int(re.search(r"--partitions (\d+)", script)[1])  # type: ignore[index]
    assert all(int(c["environment"]["POKESAGA_PARTITIONS"]) == partitions for c in OURS.values())


def test_every_environment_variable_is_one_the_settings_read_and_each_service_has_its_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = set(re.findall(r"CREATE DATABASE (\w+);", (ROOT / "deploy" / "postgres-databases.sql").read_text()))
    for name, container in OURS.items():
        env = container["environment"]
        unknown = {k for k in env if not is_setting(k)}
        assert unknown == set(), f"{name}: variables no setting reads: {unknown}"
        settings = settings_in(env, monkeypatch)
        for service in SERVICES:
            url = make_url(settings.db_url(service))
            assert url.get_backend_name() == "postgresql" and url.host == "postgres" and url.database == service
            assert url.database in created
        assert settings.bootstrap == "kafka:9092" and "kafka" in CONTAINERS


def test_every_metrics_port_is_scraped_and_the_prometheus_config_is_valid() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    served = {f"{name}:{c['environment']['POKESAGA_METRICS_PORT']}" for name, c in OURS.items() if name in SERVICES}
    served.add(f"tracker:{CONTAINERS['tracker']['environment']['POKESAGA_TRACKER_PORT']}")
    assert CONTAINERS["tracker"]["command"] == ["pokesaga", "run", "tracker"]
    assert served == targets
    assert all(c["environment"]["POKESAGA_METRICS_HOST"] == "0.0.0.0" for c in OURS.values())
    assert any("./deploy/prometheus.yml" in v for v in CONTAINERS["prometheus"]["volumes"])
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: `make promtool` installs Debian's prometheus package")
    checked = subprocess.run([promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_health_check_probes_the_port_its_container_serves() -> None:
    """Readiness for the services, the API for the tracker, each on the port compose gives it (the
    image itself, its user and its own HEALTHCHECK: tests/containers, on a real engine)."""
    for service in SERVICES:
        probe = " ".join(CONTAINERS[service]["healthcheck"]["test"])
        port = CONTAINERS[service]["environment"]["POKESAGA_METRICS_PORT"]
        assert f"127.0.0.1:{port}/health/ready" in probe, service
    tracker = CONTAINERS["tracker"]
    assert f"127.0.0.1:{tracker['environment']['POKESAGA_TRACKER_PORT']}/" in " ".join(tracker["healthcheck"]["test"])


def test_the_readme_container_instructions_match_the_compose_file() -> None:
    section = doc_section("Running as containers")
    assert "docker compose up -d --build" in section
    assert "docker compose run --rm cli pokesaga start --wait" in section
    rows = re.findall(r"^\| `([\w-]+)` \| ([^|]+) \|", section, re.M)
    table = {name: cell.strip("` ").split("`")[0] for name, cell in rows}
    assert set(table) == set(CONTAINERS)  # every container documented, none invented
    for name, image in table.items():
        assert CONTAINERS[name]["image"].startswith(image.split(" ")[0]), (name, image)
    configuration = doc_section("Configuration")
    documented = set(re.findall(r"`((?:POKESAGA|KAFKA)_[A-Z_<>]+)`", section + configuration))
    assert {"POKESAGA_METRICS_PORT", "POKESAGA_METRICS_HOST", "KAFKA_BOOTSTRAP_SERVERS"} <= documented
    for variable in documented:
        if "<SERVICE>" in variable:
            assert all(is_setting(variable.replace("<SERVICE>", s.upper())) for s in SERVICES)
        else:
            assert is_setting(variable), variable


# -- the 3-broker variant: docker-compose.cluster.yml, an override of docker-compose.yml ----

CLUSTER = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
NODES = ("kafka", "kafka-2", "kafka-3")


def with_cluster(name: str) -> dict[str, Any]:
    """Container ``name`` as compose runs it with both files: the override's keys replace the
    base's, except ``environment``, whose variables are merged."""
    base, override = CONTAINERS.get(name, {}), CLUSTER["services"].get(name, {})
    merged = base | override
    merged["environment"] = base.get("environment", {}) | override.get("environment", {})
    return merged


def test_the_cluster_variant_runs_three_combined_kraft_nodes_in_one_quorum() -> None:
    nodes = {name: with_cluster(name) for name in NODES}
    envs = {name: node["environment"] for name, node in nodes.items()}
    assert {env["KAFKA_NODE_ID"] for env in envs.values()} == {"1", "2", "3"}
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert len(voters) == 1
    by_id = dict(v.split("@") for v in voters.pop().split(","))
    assert {by_id[env["KAFKA_NODE_ID"]] for env in envs.values()} == {f"{name}:9093" for name in NODES}
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1
    for name, env in envs.items():
        assert nodes[name]["image"].startswith("apache/kafka:")
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
    disks = [v.split(":")[0] for node in nodes.values() for v in node["volumes"]]
    assert len(set(disks)) == 3  # a disk each
    assert set(disks) <= set(COMPOSE["volumes"]) | set(CLUSTER["volumes"])


def test_the_cluster_topic_job_creates_every_topic_with_three_replicas_and_two_in_sync() -> None:
    job = with_cluster("topics")
    script = "\n".join(job["command"])
    loop = re.search(r"for topic in (.*?); do", script, re.S)
    assert loop is not None and loop[1].replace("\\", " ").split() == CAPTURE.all_topics()
    assert "--replication-factor 3" in script and "--config min.insync.replicas=2" in script
    assert {n: c["condition"] for n, c in job["depends_on"].items()} == dict.fromkeys(NODES, "service_healthy")


def test_the_cluster_variant_points_every_service_at_every_broker_with_three_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert set(CLUSTER["services"]) - set(NODES) - {"topics"} == set(OURS)  # every container of ours
    for name in OURS:
        env = with_cluster(name)["environment"]
        assert {k for k in env if not is_setting(k)} == set(), name
        settings = settings_in(env, monkeypatch)
        assert settings.bootstrap.split(",") == [f"{node}:9092" for node in NODES], name
        assert settings.replication_factor == 3, name
    section = doc_section("Running as containers")
    assert "docker compose -f docker-compose.yml -f docker-compose.cluster.yml up -d --build" in section


# -- the secured variant: docker-compose.secured.yml, an override of docker-compose.yml -----------

SECURED = yaml.safe_load((ROOT / "docker-compose.secured.yml").read_text())
PRINCIPALS = {**{s: s for s in SERVICES}, "tracker": "tracker", "cli": "starter", "admin": "admin"}  # container → who


def with_secured(name: str) -> dict[str, Any]:
    """Container ``name`` as compose runs it with both files (as ``with_cluster``; the volumes merged too)."""
    base, override = CONTAINERS.get(name, {}), SECURED["services"].get(name, {})
    merged = base | override
    merged["environment"] = base.get("environment", {}) | override.get("environment", {})
    merged["volumes"] = base.get("volumes", []) + override.get("volumes", [])
    merged["depends_on"] = base.get("depends_on", {}) | override.get("depends_on", {})
    return merged


def test_the_secured_variant_runs_each_pokesaga_container_as_its_own_principal_with_its_volume_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read: the settings only check that the file is there\n")
    rules = acls.derive(CAPTURE)
    assert {p.removeprefix("User:") for p in acls.principals(rules)} | {"admin"} == set(PRINCIPALS.values())
    assert set(OURS) | {"admin"} == set(PRINCIPALS)
    for name, principal in PRINCIPALS.items():
        container = with_secured(name)
        env = container["environment"]
        assert {k for k in env if not is_setting(k)} == set(), name
        # /run/pokesaga/ca.pem in the container, and the password read from its volume
        settings = settings_in(env | {"KAFKA_SSL_CAFILE": str(ca), "KAFKA_SASL_PASSWORD": "read"}, monkeypatch)
        assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
        assert settings.kafka_sasl_username == principal and settings.bootstrap == "kafka:9092", name
        assert env["KAFKA_SSL_CAFILE"] == "/run/pokesaga/ca.pem" and "KAFKA_SASL_PASSWORD" not in env, name
        assert f"secrets-{principal}:/run/pokesaga:ro" in container["volumes"], name
        assert not [v for v in container["volumes"] if v.startswith("secrets-") and principal not in v], name
        assert '/run/pokesaga/$$KAFKA_SASL_USERNAME.env"' in container["entrypoint"][2], name
    assert with_secured("admin")["command"] == ["pokesaga", "acls", "--apply"]  # makes the topics, adds the ACLs
    for service in (*SERVICES, "tracker"):
        assert with_secured(service)["depends_on"]["admin"]["condition"] == "service_completed_successfully"
    job = with_secured("secrets")["volumes"]
    assert {v.split(":")[0] for v in job if v.startswith("secrets-")} == {
        f"secrets-{p}" for p in [*PRINCIPALS.values(), "kafka"]
    }
    assert set(SECURED["volumes"]) == {f"secrets-{p}" for p in [*PRINCIPALS.values(), "kafka"]}


def test_the_secured_broker_speaks_sasl_ssl_on_every_listener_it_publishes_with_the_standard_authorizer() -> None:
    kafka = with_secured("kafka")
    env = kafka["environment"]
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in env["KAFKA_LISTENERS"].split(","):
        name, address = listener.split("://")
        assert protocols[name] == "SASL_SSL" or address.startswith("127.0.0.1:"), listener  # loopback: its own
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:admin", "User:ANONYMOUS"}
    assert "/dev/tcp/127.0.0.1/9091 " in " ".join(kafka["healthcheck"]["test"])  # its loopback listener
    assert kafka["depends_on"]["secrets"]["condition"] == "service_completed_successfully"
    section = doc_section("Running as containers")
    assert "docker compose -f docker-compose.yml -f docker-compose.secured.yml up -d --build" in section


# -- the Kafka container's health check: a shell probe, run here against a real broker ------------


def kafka_probes() -> dict[str, str]:
    """Each compose file's Kafka health check, as the shell command the container runs."""
    checks = {
        "docker-compose.yml": CONTAINERS["kafka"]["healthcheck"]["test"],
        "docker-compose.cluster.yml": CLUSTER["x-kafka-node"]["healthcheck"]["test"],
        "docker-compose.secured.yml": with_secured("kafka")["healthcheck"]["test"],
    }
    found = {}
    for name, test in checks.items():
        assert test[:3] == ["CMD", "bash", "-c"], name  # no JVM started every 5 s
        found[name] = test[3].replace("$$", "$")  # compose's escape of a literal $
    return found


def probe(command: str, port: int) -> int:
    """The probe's exit code on ``port``, given 3 s (compose gives it 10)."""
    on_port = re.sub(r"/dev/tcp/127\.0\.0\.1/\d+", f"/dev/tcp/127.0.0.1/{port}", command)
    return subprocess.run(["timeout", "3", "bash", "-c", on_port], capture_output=True).returncode


def test_the_kafka_health_check_is_answered_by_a_broker_and_by_nothing_else(kafka_bootstrap: str) -> None:
    broker = int(kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
    with socket.create_server(("127.0.0.1", 0)) as mute:  # accepts, never answers a Kafka request
        mute_port = mute.getsockname()[1]
        for name, command in kafka_probes().items():
            assert probe(command, broker) == 0, name
            assert probe(command, free_port()) != 0, name  # nothing listens
            assert probe(command, mute_port) != 0, name  # listens, is no Kafka: the timeout ends it
