"""A secured listener for the local broker: SASL_SSL with SCRAM-SHA-512 (SCRAM-SHA-256 and PLAIN
too), on a certificate made on the fly by a CA of its own, beside the PLAINTEXT one the broker
itself speaks.

Kafka reads PEM as it is (``ssl.keystore.type=PEM``): no JKS keystore. The SCRAM users are
written into the metadata when the storage is formatted (``kafka-storage format --add-scram``),
so they exist before the broker first answers. Needs ``trustme`` (a dev dependency, and the image's
``tls`` extra: the compose file's secured variant makes its certificates with it).

With ``authorizer``, the broker runs Kafka's standard authorizer (KRaft's StandardAuthorizer): no
ACL, no access (``allow.everyone.if.no.acl.found=false``), but for its super users: ``admin`` (a
SCRAM user of the secured listener) and ``ANONYMOUS``, the principal of the broker's own PLAINTEXT
and CONTROLLER listeners on 127.0.0.1 — the broker speaks to its controller there, so that one stays
the administrator's: whatever runs on this machine and connects there is a super user. The services
connect to the secured listener, each as itself (``write_credentials``: one env file per principal).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import SecretStr

from engine.settings import Settings

S = TypeVar("S", bound=Settings)

LISTENER = "SECURED"
ADMIN = "admin"  # the secured listener's super user: applies the ACLs, runs the operators' commands
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
MTLS = "MUTUAL"
SCRAM = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass
class SecuredListener:
    """``users`` (name → password) may connect on ``port`` over TLS; clients trust ``ca_file``.

    It listens on 127.0.0.1 and is known by ``name``, the one name its certificate holds (with
    ``aliases``, the other host names and IP addresses it is reached by, if any): a client that
    connects by the address checks that the certificate names it, and is refused.
    ``mtls_port``: a second listener, SSL with a client certificate required (mutual TLS)."""

    folder: Path
    port: int
    users: dict[str, str] = field(default_factory=dict)
    name: str = "localhost"
    mtls_port: int | None = None
    authorizer: bool = False  # Kafka's standard authorizer: only what an ACL allows, but for the super users
    aliases: tuple[str, ...] = ()  # other names of the broker in its certificate (a container's, 127.0.0.1)

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.pem"

    @property
    def address(self) -> str:
        """The bootstrap address clients give: by the certificate's name."""
        return f"{self.name}:{self.port}"

    @property
    def client_files(self) -> tuple[Path, Path]:
        """A client certificate signed by the CA, and its key (for the mutual TLS listener)."""
        return self.folder / "client.pem", self.folder / "client.key"

    @property
    def mtls_address(self) -> str:
        return f"{self.name}:{self.mtls_port}"

    @property
    def numeric_address(self) -> str:
        """The same listener by its IP address, which the certificate does not name."""
        return f"127.0.0.1:{self.port}"

    def make_certificates(self) -> None:
        """A CA, and the broker's certificate for ``name`` (and ``aliases``) signed by it."""
        import trustme
        from cryptography.hazmat.primitives import serialization

        self.folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        leaf = ca.issue_cert(self.name, *self.aliases)
        ca.cert_pem.write_to_path(str(self.ca_file))
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
        pkcs8 = key.private_bytes(  # the only unencrypted key form Kafka's PEM store reads
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        chain = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
        self.keystore.write_bytes(pkcs8 + chain)
        client = ca.issue_cert("pokesaga-client")
        cert, key_file = self.client_files
        client.cert_chain_pems[0].write_to_path(str(cert))
        client.private_key_pem.write_to_path(str(key_file))

    def listener(self) -> str:
        mtls = [f"{MTLS}://127.0.0.1:{self.mtls_port}"] if self.mtls_port else []
        return ",".join([f"{LISTENER}://{self.numeric_address}", *mtls])

    def advertised(self) -> str:
        mtls = [f"{MTLS}://{self.mtls_address}"] if self.mtls_port else []
        return ",".join([f"{LISTENER}://{self.address}", *mtls])

    def properties(self) -> list[str]:
        """The lines that turn the listener on (after the common ones: these win)."""
        prefix = f"listener.name.{LISTENER.lower()}"
        plain_users = "".join(f' user_{name}="{password}"' for name, password in self.users.items())
        mtls = f"listener.name.{MTLS.lower()}"
        mutual = [
            f"{mtls}.ssl.keystore.type=PEM",
            f"{mtls}.ssl.keystore.location={self.keystore}",
            f"{mtls}.ssl.truststore.type=PEM",
            f"{mtls}.ssl.truststore.location={self.ca_file}",
            f"{mtls}.ssl.client.auth=required",
        ]
        authorized = [
            f"authorizer.class.name={AUTHORIZER}",
            f"super.users=User:ANONYMOUS;User:{ADMIN}",  # ANONYMOUS: the loopback PLAINTEXT and CONTROLLER listeners
            "allow.everyone.if.no.acl.found=false",
        ]
        return [
            f"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,{LISTENER}:SASL_SSL,{MTLS}:SSL",
            *(authorized if self.authorizer else []),
            *(mutual if self.mtls_port else []),
            f"{prefix}.sasl.enabled.mechanisms={','.join(SCRAM)},PLAIN",
            *(
                f"{prefix}.{mechanism.lower()}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                for mechanism in SCRAM
            ),
            f"{prefix}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required"
            f"{plain_users};",
            f"{prefix}.ssl.keystore.type=PEM",
            f"{prefix}.ssl.keystore.location={self.keystore}",
        ]

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM users."""
        return [
            arg
            for name, password in self.users.items()
            for mechanism in SCRAM
            for arg in ("--add-scram", _scram(mechanism, name, password))
        ]

    def client_fields(self, user: str) -> dict[str, str]:
        """The settings a client connecting as ``user`` sets, by field name (their variables are the
        names in capitals)."""
        return {
            "kafka_bootstrap_servers": self.address,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_ssl_cafile": str(self.ca_file),
            "kafka_sasl_mechanism": SCRAM[0],
            "kafka_sasl_username": user,
            "kafka_sasl_password": self.users[user],
        }

    def environment(self, user: str) -> dict[str, str]:
        """What a client connecting as ``user`` sets: the variables every pokesaga client reads."""
        return {name.upper(): value for name, value in self.client_fields(user).items()}

    def settings(self, user: str, base: S) -> S:
        """``base``, for a client connecting as ``user``."""
        fields = self.client_fields(user)
        typed = {"kafka_ssl_cafile": self.ca_file, "kafka_sasl_password": SecretStr(fields["kafka_sasl_password"])}
        return base.model_copy(update=fields | typed)

    def write_credentials(self, folder: Path) -> list[Path]:
        """One env file per user, ``<user>.env``, readable by its owner alone (``set -a; . status.env``),
        and ``admin.properties`` for Kafka's own tools (``kafka-acls.sh --command-config``)."""
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for user in self.users:
            lines = [f"{name}={value}" for name, value in self.environment(user).items()]
            written.append(_private(folder / f"{user}.env", "\n".join(lines) + "\n"))
        if ADMIN in self.users:
            written.append(_private(folder / f"{ADMIN}.properties", "\n".join(self.tool_properties(ADMIN)) + "\n"))
        return written

    def tool_properties(self, user: str, ca_file: Path | None = None) -> list[str]:
        """A client file for Kafka's own tools (``--command-config``) connecting as ``user``; ``ca_file``:
        where the tools find the CA (default: where it was made)."""
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" '
                f'password="{self.users[user]}";')  # fmt: skip
        return ["security.protocol=SASL_SSL", f"sasl.mechanism={SCRAM[0]}", f"sasl.jaas.config={jaas}",
                "ssl.truststore.type=PEM", f"ssl.truststore.location={ca_file or self.ca_file}"]  # fmt: skip


def passwords(folder: Path, users: Iterable[str]) -> dict[str, str]:
    """Each user's password: the one its env file in ``folder`` holds (the broker knows it already),
    else a new random one."""
    found = {}
    for user in dict.fromkeys(users):
        kept = folder / f"{user}.env"
        lines = kept.read_text().splitlines() if kept.exists() else []
        old = [line.split("=", 1)[1] for line in lines if line.startswith("KAFKA_SASL_PASSWORD=")]
        found[user] = old[0] if old else secrets.token_urlsafe(24)
    return found


def _private(path: Path, text: str) -> Path:
    """``text`` written to ``path``, which only its owner may read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)  # a file that was there before keeps its mode otherwise
    return path


def _scram(mechanism: str, name: str, password: str) -> str:
    if any(c in name + password for c in ',[]=" ;\\'):
        raise ValueError("a local SASL user's name and password may not hold , [ ] = \" ; \\ or a space")
    return f"{mechanism}=[name={name},password={password}]"
