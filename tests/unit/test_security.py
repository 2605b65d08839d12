"""Broker security settings: one place builds every client's TLS and SASL options, and a
setting that cannot work is one line naming it, before any connection."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from capture.cli import main
from capture.settings import Settings
from engine.broker import kafka, security
from tests.support import ROOT

SECURED = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def test_by_default_every_client_speaks_plaintext() -> None:
    assert security.client_options(Settings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_checks_the_certificate_and_its_host_name_and_carries_the_credentials(ca_file: Path) -> None:
    settings = Settings(
        kafka_security_protocol="sasl_ssl",
        kafka_ssl_cafile=ca_file,
        kafka_sasl_mechanism="scram-sha-512",
        kafka_sasl_username="alice",
        kafka_sasl_password="s3cret",
    )
    options = security.client_options(settings)
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(settings)


def test_host_name_verification_can_be_turned_off_and_the_certificate_is_still_checked(ca_file: Path) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file, kafka_ssl_check_hostname=False)
    context = security.client_options(settings)["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_a_client_certificate_is_loaded_with_its_key(tmp_path: Path, ca_file: Path) -> None:
    leaf = trustme.CA().issue_cert("client.example")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file, kafka_ssl_certfile=cert, kafka_ssl_keyfile=key
    )
    assert isinstance(security.client_options(settings)["ssl_context"], ssl.SSLContext)


def test_every_client_of_a_secured_address_takes_its_options_and_others_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(security, "_PROFILES", {})
    asyncio.run(clients_of_a_secured_address())


async def clients_of_a_secured_address() -> None:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:19093",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="alice",
        kafka_sasl_password="pw",
    )
    security.secure(settings)
    producer = kafka.producer("127.0.0.1:19093")
    assert producer.client._security_protocol == "SASL_PLAINTEXT"
    assert producer.client._sasl_plain_username == "alice"
    assert kafka.admin_client("127.0.0.1:19093")._client._sasl_mechanism == "PLAIN"
    assert kafka.consumer("127.0.0.1:19093", None)._client._security_protocol == "SASL_PLAINTEXT"
    assert kafka.consumer("127.0.0.1:19094", None)._client._security_protocol == "PLAINTEXT"


@pytest.mark.parametrize(
    ("environment", "line"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "pokesaga: KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT'"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "pokesaga: KAFKA_SASL_MECHANISM: Input should be 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
            "KAFKA_SASL_MECHANISM=SCRAM-SHA-256 needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        ({"KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SASL_MECHANISM set, but KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
            "pokesaga: KAFKA_SSL_CAFILE: no such file: /no/such/ca.pem",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/no/such/client.pem"},
            "pokesaga: KAFKA_SSL_CERTFILE: no such file",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/no/such/client.key"},
            "pokesaga: KAFKA_SSL_KEYFILE: no such file",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": __file__},
            "holds no usable PEM certificate",
        ),
        ({"KAFKA_SSL_CAFILE": __file__}, "KAFKA_SSL_CAFILE set, but KAFKA_SECURITY_PROTOCOL is PLAINTEXT (no TLS)"),
    ],
)
def test_a_security_setting_that_cannot_work_is_one_line_naming_it(
    environment: dict[str, str], line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {**SECURED, **environment}.items():
        monkeypatch.setenv(name, value)
    assert main(["dlq", "list", "capture.status"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert line in err


def test_every_security_setting_is_in_the_configuration_table() -> None:
    table = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    names = [n for n in Settings.model_fields if n.startswith(("kafka_ssl_", "kafka_sasl_", "kafka_security_"))]
    assert len(names) == 9
    for name in names:
        assert f"| `{name.upper()}`, `POKESAGA_{name.upper()}` |" in table, name


def test_the_trackers_faust_app_gets_the_same_credentials(ca_file: Path) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from engine.tracker.app import faust_credentials

    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=ca_file,
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="tracker",
        kafka_sasl_password="pw",
    )
    options = security.client_options(settings)
    assert dict(credentials_to_aiokafka_auth(faust_credentials(options))) == options
    tls = security.client_options(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file))
    assert dict(credentials_to_aiokafka_auth(faust_credentials(tls))) == tls
    assert faust_credentials(security.client_options(Settings())) is None
