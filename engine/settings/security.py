"""Settings: how every client speaks to the brokers (TLS, SASL), read as ``KAFKA_…`` (as other Kafka
tools name them) or ``POKESAGA_KAFKA_…``; settings that only make sense together are refused, not
ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator

from engine.settings.base import SettingsGroup


class SecuritySettings(SettingsGroup):
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        validation_alias=AliasChoices("KAFKA_SECURITY_PROTOCOL", "POKESAGA_KAFKA_SECURITY_PROTOCOL"),
        description="How every client speaks to the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SSL_CAFILE", "POKESAGA_KAFKA_SSL_CAFILE"),
        description="PEM file of the CA(s) that signed the brokers' certificates; unset: the system's CAs.",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SSL_CERTFILE", "POKESAGA_KAFKA_SSL_CERTFILE"),
        description="PEM file of this client's certificate (chain), for brokers that ask one (mutual TLS).",
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SSL_KEYFILE", "POKESAGA_KAFKA_SSL_KEYFILE"),
        description="PEM file of the client certificate's private key (unset: in the certificate file).",
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SSL_KEY_PASSWORD", "POKESAGA_KAFKA_SSL_KEY_PASSWORD"),
        description="The password of an encrypted private key.",
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True,
        validation_alias=AliasChoices("KAFKA_SSL_CHECK_HOSTNAME", "POKESAGA_KAFKA_SSL_CHECK_HOSTNAME"),
        description="The broker's certificate must name the host connected to. The certificate is checked "
        "against the CA either way.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SASL_MECHANISM", "POKESAGA_KAFKA_SASL_MECHANISM"),
        description="With SASL_SSL or SASL_PLAINTEXT: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    kafka_sasl_username: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SASL_USERNAME", "POKESAGA_KAFKA_SASL_USERNAME"),
        description="The SASL user name: this service's principal.",
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_SASL_PASSWORD", "POKESAGA_KAFKA_SASL_PASSWORD"),
        description="The SASL password (never printed).",
    )

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip():  # set empty: unset
            return "PLAINTEXT" if info.field_name == "kafka_security_protocol" else None
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_sasl_username", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}" if not value.exists() else f"{value} is not a file")
        return value

    @property
    def kafka_tls(self) -> bool:
        """Whether the clients speak TLS to the brokers (SSL or SASL_SSL)."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _security_whole(self) -> Self:
        """Security settings that only make sense together: refused, not ignored (a CA file with
        PLAINTEXT would send everything in clear while the operator believes it encrypted)."""
        protocol, tls = self.kafka_security_protocol, self.kafka_tls
        sasl = protocol.startswith("SASL_")
        given = {
            "KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if not tls and (names := [name for name, value in given.items() if value is not None]):
            raise ValueError(
                f"{', '.join(names)} set, but KAFKA_SECURITY_PROTOCOL is {protocol} (no TLS): set SSL or SASL_SSL"
            )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("KAFKA_SSL_KEYFILE set without KAFKA_SSL_CERTFILE: a key needs its certificate")
        if not sasl and self.kafka_sasl_mechanism is not None:
            raise ValueError(
                f"KAFKA_SASL_MECHANISM set, but KAFKA_SECURITY_PROTOCOL is {protocol}: set SASL_SSL or SASL_PLAINTEXT"
            )
        if sasl and self.kafka_sasl_mechanism is None:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            )
        if sasl and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(
                f"KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        return self
