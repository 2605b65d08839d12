"""A secured listener for the local broker: SASL_SSL with SCRAM-SHA-512 (SCRAM-SHA-256 and PLAIN
too), on a certificate made on the fly by a CA of its own, beside the PLAINTEXT one the broker
itself speaks.

Kafka reads PEM as it is (``ssl.keystore.type=PEM``): no JKS keystore. The SCRAM users are
written into the metadata when the storage is formatted (``kafka-storage format --add-scram``),
so they exist before the broker first answers. Needs ``trustme`` (a dev dependency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LISTENER = "SECURED"
MTLS = "MUTUAL"
SCRAM = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass
class SecuredListener:
    """``users`` (name → password) may connect on ``port`` over TLS; clients trust ``ca_file``.

    It listens on 127.0.0.1 and is known by ``name``, the one name its certificate holds: a
    client that connects by the address checks that the certificate names it, and is refused.
    ``mtls_port``: a second listener, SSL with a client certificate required (mutual TLS)."""

    folder: Path
    port: int
    users: dict[str, str] = field(default_factory=dict)
    name: str = "localhost"
    mtls_port: int | None = None

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
        """A CA, and the broker's certificate for ``name`` signed by it."""
        import trustme
        from cryptography.hazmat.primitives import serialization

        self.folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        leaf = ca.issue_cert(self.name)
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
        return [
            f"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,{LISTENER}:SASL_SSL,{MTLS}:SSL",
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


def _scram(mechanism: str, name: str, password: str) -> str:
    if any(c in name + password for c in ',[]=" ;\\'):
        raise ValueError("a local SASL user's name and password may not hold , [ ] = \" ; \\ or a space")
    return f"{mechanism}=[name={name},password={password}]"
