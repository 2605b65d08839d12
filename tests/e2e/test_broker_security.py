"""A broker that asks for TLS and SCRAM: every client pokesaga makes connects with the settings,
and a wrong password or an untrusted certificate is one clear line and a non-zero exit, at once.

The module runs a local broker of its own with a SASL_SSL listener (SCRAM-SHA-512, a CA made
for the run): see engine.local.secured."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from capture.settings import Settings
from engine.broker import kafka, security
from engine.local.broker import LocalKafka, free_port
from engine.local.secured import SecuredListener
from tests import databases
from tests.e2e.conftest import CERTAIN, cluster, pokesaga
from tests.support import eventually, http_get

PASSWORD = "alice-" + uuid.uuid4().hex


class Secured:
    def __init__(self, listener: SecuredListener, data: Path) -> None:
        self.listener = listener
        self.data = data
        self.env = {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SSL_CAFILE": str(listener.ca_file),
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "alice",
            "KAFKA_SASL_PASSWORD": PASSWORD,
        }
        self.settings = Settings(
            kafka_bootstrap_servers=listener.address,
            data_dir=data,
            kafka_security_protocol="SASL_SSL",
            kafka_ssl_cafile=listener.ca_file,
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="alice",
            kafka_sasl_password=PASSWORD,
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("the local broker needs a JDK 17 and Maven (make system-deps)")
    state = tmp_path_factory.mktemp("secured-broker")
    listener = SecuredListener(state / "tls", free_port(), {"alice": PASSWORD}, mtls_port=free_port())
    local = LocalKafka(Settings().kafka_cache_dir, state=state / "broker", secured=listener)
    local.start()
    try:
        found = Secured(listener, tmp_path_factory.mktemp("secured-data"))
        security.secure(found.settings)  # this process's clients of that address, as the CLI's
        yield found
    finally:
        local.stop()


@pytest.mark.no_database
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_a_record_goes_round_trip_over_sasl_ssl(secured: Secured, mechanism: str) -> None:
    address = secured.listener.address
    security.secure(secured.settings.model_copy(update={"kafka_sasl_mechanism": mechanism}))
    try:
        topic = f"secured-{uuid.uuid4().hex[:8]}"
        await kafka.ensure_topics(address, [topic], 1, timeout=30)  # the admin client
        producer = kafka.producer(address)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"over TLS", key=b"saga-1")
        finally:
            await producer.stop()
        records, _ = await kafka.read_to_end(address, [topic])  # a consumer
        assert [(r.key, r.value) for r in records] == [(b"saga-1", b"over TLS")]
    finally:
        security.secure(secured.settings)


@pytest.mark.no_database
async def test_a_client_certificate_opens_a_listener_that_requires_one(secured: Secured) -> None:
    listener = secured.listener
    cert, key = listener.client_files
    mutual = Settings(
        kafka_bootstrap_servers=listener.mtls_address,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=listener.ca_file,
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=key,
    )
    security.secure(mutual)
    topic = f"mutual-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(listener.mtls_address, [topic], 1, timeout=30)
    producer = kafka.producer(listener.mtls_address)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"mutual", key=b"k")
    finally:
        await producer.stop()
    records, _ = await kafka.read_to_end(listener.mtls_address, [topic])
    assert [r.value for r in records] == [b"mutual"]


@pytest.mark.no_database
def test_without_its_client_certificate_a_mutual_tls_listener_refuses_in_one_line(secured: Secured) -> None:
    listener = secured.listener
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SASL_MECHANISM": "", "KAFKA_SASL_USERNAME": ""}
    code, err, took = refused(secured, "--bootstrap-servers", listener.mtls_address, "dlq", "list", "x", **env)
    assert code == 1, err
    last = err.strip().splitlines()[-1]  # after aiokafka's "connection closed": all it knows
    assert last == (
        f"pokesaga: {listener.mtls_address} requires a client certificate: set KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE"
    ), err
    assert took < 30


@pytest.mark.no_database
def test_a_client_certificate_from_another_ca_is_refused_in_one_line(secured: Secured, tmp_path: Path) -> None:
    listener = secured.listener
    stranger = trustme.CA().issue_cert("pokesaga-client")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    stranger.cert_chain_pems[0].write_to_path(str(cert))
    stranger.private_key_pem.write_to_path(str(key))
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SASL_MECHANISM": "", "KAFKA_SASL_USERNAME": ""}
    env |= {"KAFKA_SSL_CERTFILE": str(cert), "KAFKA_SSL_KEYFILE": str(key)}
    code, err, took = refused(secured, "--bootstrap-servers", listener.mtls_address, "dlq", "list", "x", **env)
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pokesaga: {listener.mtls_address} refused this client's certificate ("), err
    assert last.endswith("KAFKA_SSL_CERTFILE must be signed by a CA the broker trusts"), err
    assert took < 30


def refused(secured: Secured, *args: str, **env: str) -> tuple[int, str, float]:
    begun = time.monotonic()
    done = pokesaga(secured.settings, *args, env=secured.env | env)
    return done.returncode, done.stderr, time.monotonic() - begun


@pytest.mark.no_database
@pytest.mark.parametrize(
    "command", [("dlq", "list", "capture.status"), ("run", "status"), ("run", "tracker"), ("start", "--wait")]
)
def test_a_wrong_password_is_one_clear_line_and_a_non_zero_exit_at_once(
    secured: Secured, command: tuple[str, ...]
) -> None:
    code, err, took = refused(secured, *command, KAFKA_SASL_PASSWORD="not-" + PASSWORD)
    assert code == 1, err
    *logged, last = err.strip().splitlines()
    assert command[0] == "run" or not logged, err  # a service logs aiokafka's error too, then says it
    assert last == (
        f"pokesaga: {secured.listener.address} refused the credentials of 'alice' (SCRAM-SHA-512): "
        "check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    ), err
    assert "Traceback" not in err and PASSWORD not in err
    assert took < 30, f"took {took:.0f}s: a refusal must not be waited out as a broker down"


@pytest.mark.no_database
def test_a_broker_certificate_from_another_ca_is_one_clear_line_and_a_non_zero_exit(
    secured: Secured, tmp_path: Path
) -> None:
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    code, err, took = refused(secured, "dlq", "list", "capture.status", KAFKA_SSL_CAFILE=str(stranger))
    assert code == 1, err
    (last,) = err.strip().splitlines()
    assert last.startswith(f"pokesaga: the TLS certificate of {secured.listener.address} is not trusted ("), err
    assert last.endswith("KAFKA_SSL_CAFILE must name the CA that signed it"), err
    assert "Traceback" not in err
    assert took < 30


@pytest.mark.no_database
def test_a_broker_certificate_that_does_not_name_the_host_connected_to_is_refused_by_default(
    secured: Secured,
) -> None:
    numeric = secured.listener.numeric_address  # the certificate names localhost only
    code, err, _ = refused(secured, "--bootstrap-servers", numeric, "dlq", "list", "capture.status")
    assert code == 1, err
    (last,) = err.strip().splitlines()
    assert last.startswith(
        f"pokesaga: the TLS certificate of {numeric} does not name 127.0.0.1 (IP address mismatch"
    ), err
    assert last.endswith("(or KAFKA_SSL_CHECK_HOSTNAME=false)"), err


@pytest.mark.no_database
def test_a_tls_listener_asked_without_tls_is_one_clear_line_not_a_wait(secured: Secured) -> None:
    plain = {name: "" for name in secured.env}  # KAFKA_SECURITY_PROTOCOL forgotten: PLAINTEXT
    code, err, took = refused(secured, "dlq", "list", "capture.status", **plain)
    assert code == 1, err
    last = err.strip().splitlines()[-1]  # after aiokafka's "connection closed": all it knows
    assert last == (
        f"pokesaga: {secured.listener.address} speaks TLS, and KAFKA_SECURITY_PROTOCOL is PLAINTEXT: "
        "set SSL or SASL_SSL"
    ), err
    assert took < 30


@pytest.mark.no_database
async def test_with_host_name_verification_off_the_certificate_is_still_checked_against_the_ca(
    secured: Secured,
) -> None:
    numeric = secured.listener.numeric_address
    unchecked = secured.settings.model_copy(
        update={"kafka_bootstrap_servers": numeric, "kafka_ssl_check_hostname": False}
    )
    security.secure(unchecked)
    assert await kafka.topic_exists(numeric, "no-such-topic") is False  # connected, authenticated
    assert await security.refusal(numeric) is None


@pytest.mark.skipif(databases.BACKEND != "sqlite", reason="the broker's security is the same on either database")
def test_the_services_and_the_tracker_run_a_saga_to_its_outcome_over_sasl_ssl(secured: Secured) -> None:
    with cluster(secured.listener.address, secured.data / "run", **secured.env) as running:
        port = free_port()
        running.start("tracker", POKESAGA_TRACKER_PORT=str(port))
        done = pokesaga(
            running.settings,
            *("start", "--pokemon", "Caterpie", "--trainer", "Secured", "--wait", "--timeout", "60"),
            *("--level", str(CERTAIN["level"]), "--hp", str(CERTAIN["hp"])),
            env=secured.env,
        )
        assert done.returncode == 0, done.stderr
        saga_id, outcome = done.stdout.strip().splitlines()
        assert outcome.startswith(("PokemonDelivered", "CaptureFailed")), outcome

        async def tracked() -> bool:
            status, body = http_get(port, f"/sagas/{saga_id}")
            return status == 200 and body.get("state") in ("delivered", "failed")

        asyncio.run(eventually(tracked, timeout=60, what="the tracker to follow the saga over SASL_SSL"))
