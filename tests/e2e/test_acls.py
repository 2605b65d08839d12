"""Least privilege, proven on the broker: the secured local broker (``pokesaga kafka start --secure``:
TLS, SCRAM, Kafka's standard authorizer) with the ACLs ``pokesaga acls`` derives from the declaration.

Each service runs as its own principal, the tracker as ``tracker``, sagas are started as ``starter``;
they finish, and the tracker follows them. A client without credentials is refused; a principal that
publishes no failure cannot write one, and a service cannot write what another publishes: each
service's failures have a topic of their own, the broker refuses the record, so nothing unwinds. What a
service may write, another service's event on its own topic, is a dead letter (``wrong_topic``), not
applied. The tracker's console asks for its token; its metrics do not."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError

from capture import views
from capture.processes import stop_all
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from contracts.events import Pokemon, PokemonEncountered, Trainer
from engine.broker import kafka, security
from engine.client import Client
from engine.local.broker import free_port, secured_kafka
from engine.local.secured import ADMIN, SecuredListener
from engine.ops import acls
from engine.wire.deadletter import REASON_HEADER
from tests import databases
from tests.e2e.conftest import CERTAIN, Cluster, cluster, pokesaga
from tests.support import connect, eventually, holds

pytestmark = pytest.mark.skipif(
    databases.BACKEND != "sqlite", reason="the broker's ACLs are the same on either database"
)


TOKEN = "console-" + uuid.uuid4().hex
BEARER = f"Bearer {TOKEN}"


def get(port: int, path: str, authorization: str | None = None) -> tuple[int, Any]:
    """GET the tracker's ``path`` with that ``Authorization`` header: (status, JSON or text; 0 while down)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            body = answer.read()
            return answer.status, json.loads(body) if answer.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as refused:
        return refused.code, {"headers": dict(refused.headers), "body": refused.read().decode()}
    except OSError:
        return 0, None


@dataclass
class Secured:
    listener: SecuredListener
    running: Cluster
    tracker_port: int

    def env(self, user: str) -> dict[str, str]:
        return self.listener.environment(user)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("the local broker needs a JDK 17 and Maven (make system-deps)")
    rules = acls.derive(CAPTURE)
    names = [p.removeprefix("User:") for p in acls.principals(rules)]
    local, listener = secured_kafka(Settings().kafka_cache_dir, names, state=tmp_path_factory.mktemp("acl-broker"))
    local.start()
    try:
        security.secure(
            listener.settings(ADMIN, Settings())
        )  # this process reads as the administrator (the groups joined, the topics)
        asyncio.run(acls.apply(listener.address, rules, CAPTURE.all_topics(), 3))
        asyncio.run(eventually(lambda: coordinated(listener.address), timeout=60, what="the groups' coordinator"))
        data = tmp_path_factory.mktemp("acl-data")
        each = {s: listener.environment(s) for s in SERVICES}  # each service as its own principal
        with cluster(listener.address, data, per_instance=each) as running:
            port = free_port()
            login = {"POKESAGA_TRACKER_PORT": str(port), "POKESAGA_TRACKER_TOKEN": TOKEN}
            running.start("tracker", **listener.environment("tracker"), **login)
            try:
                yield Secured(listener, running, port)
            finally:  # over TLS a consumer's close awaits the TLS shutdown, up to asyncio's (and uvloop's)
                # 30 s when the broker is slow to answer it: more than the 30 s the cluster gives by default
                stop_all(list(running.processes.values()), timeout=60)
    finally:
        local.stop()


async def coordinated(address: str) -> bool:
    """A group has a coordinator: the broker made its offsets topic (the first services need not wait for it)."""
    try:
        await kafka.group_state(address, "warm-up")
    except KafkaError:
        return False
    return True


def start(secured: Secured, trainer: str) -> tuple[str, str]:
    """A saga started as ``starter`` and waited for: its id and its outcome's line."""
    done = pokesaga(
        secured.running.settings,
        *("start", "--pokemon", "Caterpie", "--trainer", trainer, "--wait", "--timeout", "60"),
        *("--level", str(CERTAIN["level"]), "--hp", str(CERTAIN["hp"])),
        env=secured.env("starter"),
    )
    assert done.returncode == 0, done.stderr
    saga_id, outcome = done.stdout.strip().splitlines()
    return saga_id, outcome


def test_each_service_runs_as_its_own_principal_and_the_tracker_follows_every_saga(secured: Secured) -> None:
    sagas = [start(secured, f"Acl{i}") for i in range(2)]
    assert all(outcome.startswith("PokemonDelivered") for _, outcome in sagas), sagas

    async def tracked() -> bool:
        views = [get(secured.tracker_port, f"/sagas/{saga_id}", BEARER) for saga_id, _ in sagas]
        return all(status == 200 and body.get("state") == "delivered" for status, body in views)

    asyncio.run(eventually(tracked, timeout=60, what="the tracker, as itself, to follow every saga"))

    async def lag_read() -> bool:  # the participants' groups described, their offsets read: as the tracker may
        status, overview = get(secured.tracker_port, "/overview", BEARER)
        return (
            status == 200 and overview["lag"]["read_at"] is not None and overview["lag"]["error"] is None
            and all(p["members"] for p in overview["participants"].values())
        )  # fmt: skip

    asyncio.run(eventually(lag_read, timeout=30, what="the tracker to read every group's lag and members"))


def test_a_client_without_credentials_is_refused(secured: Secured) -> None:
    anonymous = {"KAFKA_SASL_MECHANISM": "", "KAFKA_SASL_USERNAME": "", "KAFKA_SASL_PASSWORD": ""}
    begun = time.monotonic()
    done = pokesaga(
        secured.running.settings, "dlq", "list", "capture.status",
        env=secured.env("starter") | anonymous | {"KAFKA_SECURITY_PROTOCOL": "SSL"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"pokesaga: {secured.listener.address} asks for SASL credentials, and KAFKA_SECURITY_PROTOCOL is SSL: "
        "set SASL_SSL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    ), done.stderr
    assert time.monotonic() - begun < 30, "a refusal is not waited out as a broker down"

    with pytest.raises(KafkaConnectionError):  # TLS alone, no SASL
        connect(secured.listener.address, client_of(secured.listener))


def client_of(listener: SecuredListener, user: str | None = None) -> dict[str, Any]:
    """aiokafka's options for a client of ``listener``: TLS, and SASL as ``user`` (None: TLS alone)."""
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=listener.ca_file)
    return security.client_options(settings if user is None else listener.settings(user, settings))


async def write_as(listener: SecuredListener, user: str, topic: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=listener.address, acks="all", **client_of(listener, user))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def forged(saga_id: str, kind: str, data: dict[str, Any]) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": f"forged-{uuid.uuid4().hex}", "source": "pokesaga/pokesaga/delivery",
        "type": kind, "time": "2026-12-07T10:00:00Z", "subject": saga_id, "sagaid": saga_id,
        "datacontenttype": "application/json", "dataversion": 1, "data": data,
    }).encode()  # fmt: skip


@pytest.mark.parametrize(
    ("user", "topic", "kind"),
    [
        ("starter", "capture.failures.delivery", "DeliveryFailed"),  # it starts sagas: it publishes no failure
        ("tracker", "capture.failures.delivery", "DeliveryFailed"),  # it observes: it publishes nothing
        ("status", "capture.failures.delivery", "DeliveryFailed"),  # another service's failure
        ("pokeball", "capture.failures.combat", "PokemonHealed"),  # another compensator's
        ("delivery", "capture.failures", "DeliveryFailed"),  # where failures went before: read, written by no one
        ("pokeball", "capture.outcomes", "PokemonDelivered"),  # delivery's outcome, not pokeball's
        ("delivery", "capture.delivery", "PokemonCaught"),  # its own input: pokeball's to write
    ],
)
def test_a_principal_cannot_write_an_event_it_does_not_publish_and_the_saga_is_not_unwound(
    secured: Secured, user: str, topic: str, kind: str
) -> None:
    saga_id, outcome = start(secured, f"Forged{user.title()}")
    assert outcome.startswith("PokemonDelivered"), outcome
    letter = forged(saga_id, kind, {"reason": "forged", "detail": "not by delivery"})
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(write_as(secured.listener, user, topic, letter, saga_id.encode()))
    records, _ = asyncio.run(kafka.read_to_end(secured.listener.address, [topic]))  # as the administrator
    assert not [r for r in records if r.key == saga_id.encode() and b"forged-" in (r.value or b"")]
    row = views.saga(secured.running.settings, saga_id)
    assert row["delivery"]["location"] is not None and not row["pokeball"]["refunded"], row


def test_another_services_failure_written_on_a_services_own_topic_is_a_dead_letter_and_unwinds_nothing(
    secured: Secured,
) -> None:
    """status may write capture.failures.status, which status.compensations reads, and status.compensations
    undoes combat's PokemonFainted: written there by status, it is refused as on the wrong topic."""
    saga_id, outcome = start(secured, "ForgedOnItsOwnTopic")
    assert outcome.startswith("PokemonDelivered"), outcome
    letter = forged(saga_id, "PokemonFainted", {"reason": "forged", "detail": "not by combat", "failed_step": "combat"})
    asyncio.run(write_as(secured.listener, "status", "capture.failures.status", letter, saga_id.encode()))

    reasons: list[str] = []

    async def dead_lettered() -> bool:
        records, _ = await kafka.read_to_end(secured.listener.address, ["capture.failures.status.dlq"])
        reasons[:] = [dict(r.headers)[REASON_HEADER].decode() for r in records if r.key == saga_id.encode()]
        return bool(reasons)

    asyncio.run(eventually(dead_lettered, timeout=60, what="the forged failure's dead letter"))
    assert reasons == ["wrong_topic: PokemonFainted belongs on capture.failures.combat"], reasons
    assert {kind for kind, _ in asyncio.run(outcomes_of(secured.listener, saga_id))} == {"PokemonDelivered"}
    row = views.saga(secured.running.settings, saga_id)
    assert row["delivery"]["location"] is not None and not row["pokeball"]["refunded"], row


def test_the_console_asks_for_its_token_and_its_metrics_stay_open(secured: Secured) -> None:
    port = secured.tracker_port
    for path in ("/", "/overview", "/sagas?limit=1", "/sagas/no-such-saga"):
        status, refused = get(port, path)
        assert status == 401, (path, refused)
        assert refused["headers"]["WWW-Authenticate"].startswith("Basic realm="), refused
        assert get(port, path, "Bearer not-" + TOKEN)[0] == 401, path
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert get(port, "/sagas?limit=1", BEARER)[0] == 200
    assert get(port, "/sagas?limit=1", basic)[0] == 200
    status, page = get(port, "/", basic)
    assert status == 200 and b"<html" in page.lower()
    status, metrics = get(port, "/metrics")
    assert status == 200 and b"pokesaga_tracker_sagas_started_total" in metrics


async def set_acl(listener: SecuredListener, user: str, operation: str, topic: str, *, allowed: bool) -> None:
    """Grant (or revoke) ``user``'s ``operation`` on ``topic``, as the administrator."""
    from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest

    change = CreateAclsRequest if allowed else DeleteAclsRequest
    request = change(
        acls.RESOURCES["Topic"], topic, acls.LITERAL, f"User:{user}", "*", acls.OPERATIONS[operation], acls.ALLOW
    )
    await kafka.with_admin(listener.address, lambda admin: admin._send_request(request))


async def outcomes_of(listener: SecuredListener, saga_id: str) -> set[tuple[str, str]]:
    """The saga's outcomes on ``capture.outcomes`` (type, event id): copies of one event count once."""
    records, _ = await kafka.read_to_end(listener.address, ["capture.outcomes"])
    found = [json.loads(r.value or b"{}") for r in records if r.key == saga_id.encode()]
    return {(o["type"], o["id"]) for o in found}


def test_a_service_whose_write_was_revoked_publishes_what_waited_once_it_is_granted_again(secured: Secured) -> None:
    """The broker refuses delivery's batch for good (no Write on capture.outcomes): aiokafka has spent
    that batch's sequence numbers, so the same producer would be refused as out of order for ever after
    (aio-libs/aiokafka#1017); delivery takes a new producer and its outcome reaches the topic once."""
    log_path = secured.running.processes["delivery"].log_path
    _, before = start(secured, "BeforeTheRevocation")  # delivery has written to capture.outcomes: it knows the topic
    assert before.startswith("PokemonDelivered"), before
    asyncio.run(set_acl(secured.listener, "delivery", "Write", "capture.outcomes", allowed=False))
    try:
        done = pokesaga(
            secured.running.settings, "start", "--pokemon", "Caterpie", "--trainer", "Revoked",
            *("--level", str(CERTAIN["level"]), "--hp", str(CERTAIN["hp"])), env=secured.env("starter"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        saga_id = done.stdout.strip().splitlines()[0]
        refused = "TopicAuthorizationFailed"
        said = lambda: refused in log_path.read_text(errors="replace")  # noqa: E731
        asyncio.run(eventually(lambda: holds(said, True), timeout=60, what=f"{refused} in delivery's log"))
        assert not asyncio.run(outcomes_of(secured.listener, saga_id))
    finally:
        asyncio.run(set_acl(secured.listener, "delivery", "Write", "capture.outcomes", allowed=True))

    async def delivered() -> bool:
        return bool(await outcomes_of(secured.listener, saga_id))

    asyncio.run(eventually(delivered, timeout=60, what="the outcome the refusal held back"))
    (outcome,) = asyncio.run(outcomes_of(secured.listener, saga_id))
    assert outcome[0] == "PokemonDelivered", outcome
    assert "the next send takes a new producer" in log_path.read_text(errors="replace")


def test_a_client_refused_once_starts_the_next_saga_on_the_same_producer(secured: Secured) -> None:
    """A ``Client`` kept open (as an application would) whose start was refused for good: its next start
    goes through once the ACL is back, instead of being refused as out of order for ever after."""
    listener = secured.listener
    starter = listener.settings("starter", Settings()).model_copy(  # by its IP address: this process's
        update={"kafka_bootstrap_servers": listener.numeric_address, "kafka_ssl_check_hostname": False}
    )  # clients of listener.address are the administrator's
    security.secure(starter)

    def encountered(trainer: str) -> PokemonEncountered:
        return PokemonEncountered(trainer=Trainer(name=trainer), pokemon=Pokemon(name="Caterpie", **CERTAIN))

    async def scenario() -> tuple[str, str | None]:
        async with Client(CAPTURE, starter) as client:
            await client.start(encountered("BeforeTheRefusal"))  # the producer knows the topic: the refusal is
            # the broker's answer to a batch (whose sequence numbers it spent), not to a metadata request
            await set_acl(listener, "starter", "Write", "capture.status", allowed=False)
            try:
                with pytest.raises(TopicAuthorizationFailedError):
                    await client.start(encountered("RefusedOnce"))
            finally:
                await set_acl(listener, "starter", "Write", "capture.status", allowed=True)
            saga_id = await client.start(encountered("AfterTheRefusal"))
            outcome = await client.outcome(saga_id, timeout=60)
            return saga_id, outcome.type if outcome else None

    saga_id, outcome = asyncio.run(scenario())
    assert outcome == "PokemonDelivered", (saga_id, outcome)


def test_a_service_whose_database_was_lost_rebuilds_as_itself_reading_back_only_the_topics_it_writes(
    secured: Secured,
) -> None:
    """delivery may read only the topic it consumes and the ones it publishes to (capture.outcomes,
    capture.failures.delivery, and capture.failures where it did): its rebuild reads back what it
    published from those, and no other."""
    running = secured.running
    saga_id, outcome = start(secured, "BeforeTheLoss")
    assert outcome.startswith("PokemonDelivered"), outcome
    delivered = views.saga(running.settings, saga_id)["delivery"]
    assert running.stop("delivery") == 0
    log_path = running.processes["delivery"].log_path
    said_before = len(log_path.read_text(errors="replace"))
    databases.lose(running.settings, "delivery")
    running.start("delivery", **secured.env("delivery"), POKESAGA_REBUILD_NEW_DATABASES="true")

    def since_restart() -> str:
        return log_path.read_text(errors="replace")[said_before:]

    loaded = re.compile(r"delivery: rebuilding: (\d+) recorded decisions loaded")
    asyncio.run(eventually(lambda: holds(lambda: bool(loaded.search(since_restart())), True), 60, "the history"))
    found = loaded.search(since_restart())
    assert found is not None and int(found.group(1)) >= 1, since_restart()
    assert "AuthorizationFailed" not in since_restart(), since_restart()
    _, after = start(secured, "AfterTheLoss")
    assert after.startswith("PokemonDelivered"), after
    assert views.saga(running.settings, saga_id)["delivery"] == delivered  # the same party slot, rebuilt
