"""docker-compose.secured.yml run for real, over the files the suite's images need (with no registry,
the stand-ins' override too): Kafka speaking SASL_SSL alone with its standard authorizer, every
container its own SCRAM principal, the ACLs ``pokesaga acls --apply`` added as admin.

From the host, as a user holding the starter's credentials: sagas started with a plain producer each
reach one outcome, read from the topic; a client without credentials is refused; a failure event
forged by the starter or by the tracker is refused by the broker, and the saga is not unwound; the
tracker's console asks for its token. One compose project for the module, up once (before the
suite's plain one: the files run in order, and the plain one is up only from test_stack.py on), and
``docker compose down -v`` leaving nothing of it."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from capture.saga import CAPTURE
from capture.settings import SERVICES
from engine.ops import acls
from tests.containers.stack import LONG_RUNNING, Stack, brought_up, outcomes, publish, start_event, until
from tests.support import connect

pytestmark = pytest.mark.timeout(900)

RUN = time.monotonic_ns() % 100_000
CERTAIN = ("--pokemon", "Caterpie", "--level", "20", "--hp", "10")  # always caught once paralyzed: delivered


@dataclass
class Secured:
    stack: Stack
    ca: Path  # the CA that signed the broker's certificate, copied to the host
    passwords: dict[str, str]  # principal → password, read from its container's volume
    token: str  # the tracker console's

    def client(self, user: str | None) -> dict[str, Any]:
        """aiokafka's options for a client on the host: TLS on the stack's CA; SCRAM as ``user`` (None: none)."""
        options: dict[str, Any] = {
            "security_protocol": "SSL",
            "ssl_context": ssl.create_default_context(cafile=str(self.ca)),
        }
        if user is not None:
            options |= {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                        "sasl_plain_username": user, "sasl_plain_password": self.passwords[user]}  # fmt: skip
        return options

    def env(self, user: str) -> dict[str, str]:
        """The host's ``pokesaga`` as ``user``: the variables docs/security.md sets."""
        return {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SSL_CAFILE": str(self.ca),
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": user,
                "KAFKA_SASL_PASSWORD": self.passwords[user]}  # fmt: skip


def variables(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def secured(engine: dict[str, str], compose_files: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    data = tmp_path_factory.mktemp("secured")
    with brought_up(engine, f"{compose_files}:docker-compose.secured.yml", "pokesaga-secured", data) as stack:
        # as docs/security.md copies them: the CA and the starter's password, from the one-shot secrets job
        stack.compose("cp", "secrets:/secrets/starter/.", str(data / "starter"))
        ca = data / "starter" / "ca.pem"
        passwords = {"starter": variables((data / "starter" / "starter.env").read_text())["KAFKA_SASL_PASSWORD"]}
        tracker = variables(stack.compose("exec", "-T", "tracker", "cat", "/run/pokesaga/tracker.env").stdout)
        passwords["tracker"] = tracker["KAFKA_SASL_PASSWORD"]
        yield Secured(stack, ca, passwords, tracker["POKESAGA_TRACKER_TOKEN"])


def test_every_container_is_healthy_and_the_acls_were_added_as_admin(secured: Secured) -> None:
    stack = secured.stack
    assert stack.unhealthy(LONG_RUNNING) == {}
    containers = stack.containers()
    for job in ("secrets", "admin", "topics"):
        assert (containers[job]["State"], containers[job]["ExitCode"]) == ("exited", 0), containers[job]
    applied = stack.compose("logs", "--no-log-prefix", "admin").stdout
    rules = acls.derive(CAPTURE)
    assert f"added {len(rules)} ACLs for {len(acls.principals(rules))} principals on kafka:9092" in applied, applied
    listed = stack.compose("run", "--rm", "admin", "pokesaga", "dlq", "list", "capture.status")  # an operator's
    assert listed.returncode == 0, listed.stderr
    for service in (*SERVICES, "tracker"):  # each as itself, the password from its own volume alone
        env = variables(stack.compose("exec", "-T", service, "env").stdout)
        assert (env["KAFKA_SECURITY_PROTOCOL"], env["KAFKA_SASL_USERNAME"]) == ("SASL_SSL", service)
        assert "KAFKA_SASL_PASSWORD" not in env  # in the service's process alone, read from its volume
        files = stack.compose("exec", "-T", service, "ls", "/run/pokesaga").stdout.split()
        assert files == ["ca.pem", f"{service}.env"], (service, files)


def test_sagas_started_on_the_host_as_the_starter_each_reach_one_outcome(secured: Secured) -> None:
    stack, starter = secured.stack, secured.client("starter")
    sagas = [f"Locked{RUN}.{i % 2}-{i}" for i in range(6)]
    publish(stack.bootstrap, [(s, start_event(s, s.rsplit("-", 1)[0], "Pidgey")) for s in sagas], **starter)

    def ended() -> dict[str, set[tuple[str, str]]] | None:
        found = {s: o for s, o in outcomes(stack.bootstrap, **starter).items() if s in sagas}
        return found if len(found) == len(sagas) else None

    found = until(ended, 180, f"an outcome for each of {len(sagas)} sagas", every=1)
    assert {saga: len(o) for saga, o in found.items()} == dict.fromkeys(sagas, 1)
    assert {t for o in found.values() for _, t in o} <= {"PokemonDelivered", "CaptureFailed"}
    started = stack.compose("run", "--rm", "cli", "pokesaga", "start", "--trainer", f"Sacha{RUN}", "--wait")
    assert started.stdout.strip().splitlines()[-1].startswith(("PokemonDelivered: ", "CaptureFailed: ")), started


def test_a_client_without_credentials_is_refused(secured: Secured) -> None:
    stack = secured.stack
    anonymous = secured.env("starter") | {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SASL_MECHANISM": "",
                                          "KAFKA_SASL_USERNAME": "", "KAFKA_SASL_PASSWORD": ""}  # fmt: skip
    refused = stack.pokesaga("dlq", "list", "capture.status", check=False, **anonymous)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"pokesaga: {stack.bootstrap} asks for SASL credentials, and KAFKA_SECURITY_PROTOCOL is SSL: "
        "set SASL_SSL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    ), refused.stderr

    with pytest.raises(KafkaConnectionError):  # TLS alone, no SASL
        connect(stack.bootstrap, secured.client(None))


def forged(saga_id: str) -> bytes:
    """A well-formed DeliveryFailed naming a real saga: what would unwind it, were it written."""
    return json.dumps({
        "specversion": "1.0", "id": f"forged-{saga_id}", "source": "pokesaga/delivery", "type": "DeliveryFailed",
        "time": "2026-12-07T10:00:00Z", "subject": saga_id, "sagaid": saga_id,
        "datacontenttype": "application/json", "dataversion": 1, "data": {"reason": "forged", "detail": "by hand"},
    }).encode()  # fmt: skip


async def write(bootstrap: str, topic: str, key: str, value: bytes, client: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10000, **client)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


def test_a_failure_forged_by_the_starter_or_the_tracker_is_refused_and_the_saga_is_not_unwound(
    secured: Secured,
) -> None:
    stack = secured.stack
    trainer = f"Forged{RUN}"
    done = stack.pokesaga(
        "start", *CERTAIN, "--trainer", trainer, "--wait", "--timeout", "120", **secured.env("starter")
    )
    saga_id, outcome = done.stdout.strip().splitlines()
    assert outcome.startswith("PokemonDelivered"), outcome
    for user in ("starter", "tracker"):  # on delivery's failure topic, or where failures went before
        for topic in ("capture.failures.delivery", "capture.failures"):
            with pytest.raises(TopicAuthorizationFailedError):
                asyncio.run(write(stack.bootstrap, topic, saga_id, forged(saga_id), secured.client(user)))
    held = json.loads(stack.pokesaga("inspect", "trainer", trainer, "--json").stdout)
    assert [p["saga_id"] for p in held["delivery"]["party"]] == [saga_id], held["delivery"]
    assert [t["refunded"] for t in held["pokeball"]["throws"]] == [False], held["pokeball"]

    def followed() -> dict[str, Any] | None:
        return stack.json("HOST_PORT_TRACKER", f"/sagas/{saga_id}", Authorization=f"Bearer {secured.token}")

    assert until(followed, 60, "the tracker to follow the saga", every=1)["state"] == "delivered"  # not unwinding


def test_the_console_asks_for_its_token(secured: Secured) -> None:
    stack = secured.stack
    for path in ("/", "/sagas?limit=1"):
        assert stack.http("HOST_PORT_TRACKER", path)[0] == 401, path
        assert stack.http("HOST_PORT_TRACKER", path, Authorization="Bearer not-the-token")[0] == 401, path
    bearer = {"Authorization": f"Bearer {secured.token}"}
    status, page = stack.http("HOST_PORT_TRACKER", "/", **bearer)
    assert status == 200 and b"<html" in page.lower()
    seen = until(lambda: stack.json("HOST_PORT_TRACKER", "/sagas?limit=100", **bearer), 30, "the saga list")
    assert any(s["saga_id"].startswith(f"Locked{RUN}.") for s in seen["sagas"]), seen
    assert stack.http("HOST_PORT_TRACKER", "/metrics")[0] == 200  # open to the scraper


def test_compose_down_v_leaves_nothing_of_the_secured_project(secured: Secured) -> None:
    stack = secured.stack
    stack.compose("down", "-v", "--remove-orphans", timeout=300)
    label = f"label=com.docker.compose.project={stack.project}"
    assert stack.docker("ps", "--all", "--quiet", "--filter", label).stdout.split() == []
    assert stack.docker("volume", "ls", "--quiet", "--filter", label).stdout.split() == []  # the secrets' too
    assert stack.docker("network", "ls", "--quiet", "--filter", label).stdout.split() == []
