"""The secured local broker's configuration: the standard authorizer, and a credentials file per principal."""

from __future__ import annotations

import stat
from pathlib import Path

from engine.local.broker import secured_kafka
from engine.local.secured import ADMIN, AUTHORIZER, SecuredListener, passwords

ROOT = Path(__file__).resolve().parents[2]


def test_with_the_authorizer_nothing_is_allowed_without_an_acl_but_to_the_super_users(tmp_path: Path) -> None:
    lines = SecuredListener(tmp_path, 9999, {"status": "pw"}, authorizer=True).properties()
    assert f"authorizer.class.name={AUTHORIZER}" in lines
    assert "allow.everyone.if.no.acl.found=false" in lines
    assert f"super.users=User:ANONYMOUS;User:{ADMIN}" in lines
    assert not any(line.startswith("authorizer.") for line in SecuredListener(tmp_path, 9999).properties())


def test_each_principal_gets_an_env_file_only_it_may_read(tmp_path: Path) -> None:
    listener = SecuredListener(tmp_path / "tls", 9999, {"status": "s3cret", ADMIN: "adm1n"}, authorizer=True)
    written = listener.write_credentials(tmp_path / "credentials")
    assert sorted(p.name for p in written) == ["admin.env", "admin.properties", "status.env"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in written)
    env = dict(line.split("=", 1) for line in (tmp_path / "credentials" / "status.env").read_text().splitlines())
    assert env == {
        "KAFKA_BOOTSTRAP_SERVERS": "localhost:9999", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CAFILE": str(tmp_path / "tls" / "ca.pem"), "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "status", "KAFKA_SASL_PASSWORD": "s3cret",
    }  # fmt: skip
    assert 'username="admin" password="adm1n"' in (tmp_path / "credentials" / "admin.properties").read_text()


def test_a_restarted_secured_broker_keeps_its_port_and_its_principals_passwords(tmp_path: Path) -> None:
    _, first = secured_kafka(tmp_path, ["status", "tracker"])
    _, again = secured_kafka(tmp_path, ["status", "tracker"])
    assert again.port == first.port and again.users == first.users
    assert set(first.users) == {"status", "tracker", ADMIN} and len(set(first.users.values())) == 3
    assert passwords(tmp_path / "nowhere", ["a"])["a"] != passwords(tmp_path / "nowhere", ["a"])["a"]


def test_the_compose_secrets_job_writes_each_principal_its_own_volume_and_keeps_them_when_run_again(
    tmp_path: Path,
) -> None:
    """deploy/secured/credentials.py, the secured compose variant's one-shot job."""
    import importlib.util

    from cryptography import x509

    spec = importlib.util.spec_from_file_location("credentials", ROOT / "deploy" / "secured" / "credentials.py")
    assert spec is not None and spec.loader is not None
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    users = job.principals()
    assert users == ["status", "combat", "pokeball", "delivery", "tracker", "starter", ADMIN]
    for name in ["kafka", *users]:
        (tmp_path / name).mkdir()
    job.make(tmp_path)
    first = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    for user in users:
        assert sorted(p.name for p in (tmp_path / user).iterdir()) == sorted(
            ["ca.pem", f"{user}.env", *([f"{ADMIN}.properties"] if user == ADMIN else [])]
        )
    env = (tmp_path / "tracker" / "tracker.env").read_text().splitlines()
    assert [line.split("=")[0] for line in env] == ["KAFKA_SASL_PASSWORD", "POKESAGA_TRACKER_TOKEN"]
    scram = (tmp_path / "kafka" / "scram-arguments").read_text().splitlines()
    assert scram.count("--add-scram") == 2 * len(users)  # SCRAM-SHA-512 and -256 each
    leaf = x509.load_pem_x509_certificates((tmp_path / "kafka" / "broker.pem").read_bytes())[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in names} == {"kafka", "localhost", "127.0.0.1"}
    assert sorted(p.name for p in (tmp_path / "kafka").iterdir()) == ["broker.pem", "ca.pem", "scram-arguments"]
    job.make(tmp_path)  # the next `docker compose up`: the broker's storage holds these passwords already
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == first
