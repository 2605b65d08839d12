"""The engine's settings, read from the environment (prefix ``POKESAGA_``), built once and passed down.

Defaults work on a laptop; the environment overrides them; an explicit argument (the
CLI's flags) overrides both. A saga subclasses ``Settings`` to add its own fields (its
services' ``<service>_db_url``, its business settings) and names its ``SERVICES``.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.retry import MAX_ATTEMPTS, CompensationRetryPolicy, RetryPolicy, parse_faults, parse_stall
from engine.worker import crash


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POKESAGA_", env_nested_delimiter="__", extra="ignore")

    SERVICES: ClassVar[tuple[str, ...]] = ()  # the saga's services: what db_url and step_retry accept

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "POKESAGA_KAFKA_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port]; unset → provision a broker (Docker or local jars).",
    )
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
        default=None, validation_alias=AliasChoices("KAFKA_SASL_USERNAME", "POKESAGA_KAFKA_SASL_USERNAME")
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SASL_PASSWORD", "POKESAGA_KAFKA_SASL_PASSWORD")
    )
    partitions: int = Field(default=3, ge=1, le=256)
    replication_factor: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="Replicas of every topic pokesaga creates; unset: one per broker, at most 3. "
        "min.insync.replicas is one less when it is 2 or more.",
    )
    accept_under_replicated: bool = Field(
        default=False, description="Run even when existing topics have fewer replicas than replication_factor."
    )
    session_timeout_ms: int = Field(
        default=6000,
        ge=1000,
        le=1_800_000,
        description="Consumer group session: how long a killed instance's partitions wait before another instance "
        "takes them. Brokers refuse less than group.min.session.timeout.ms (6000 by default).",
    )
    heartbeat_interval_ms: int = Field(default=1000, ge=100, description="At most a third of session_timeout_ms.")
    group_instance_id: str | None = Field(
        default=None,
        max_length=200,
        description="Static group membership: a name for this instance, stable across its restarts and unique among "
        "the instances of its service (e.g. the pod name). Off by default: see bench/README.md, failover.",
    )
    data_dir: Path = Field(default=Path(".pokesaga"), description="Where the SQLite files live.")
    faults: str | None = Field(
        default=None, description='Transient-error injection: "0.3", or "status=0.3,combat.compensations=0.1".'
    )
    stall: str | None = Field(
        default=None,
        description='One saga stuck on a transient error: "combat=stall-:10" makes combat fail every saga whose id '
        "starts with stall- for 10 s after its first attempt at it, then succeed. Off by default.",
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Every step's retry policy.")
    step_retry: dict[str, RetryPolicy] = Field(
        default_factory=dict, description='Per-step overrides, JSON: {"pokeball": {"maximum_attempts": 10}}.'
    )
    compensation_retry: CompensationRetryPolicy = Field(
        default_factory=CompensationRetryPolicy,
        description="Compensators' policy (intervals); the database refusing the change is not retried. How many "
        "attempts: compensation_attempts.",
    )
    compensation_attempts: int = Field(
        default=20,
        ge=1,
        le=MAX_ATTEMPTS,
        description="A compensation still failing after this many attempts is dead-lettered (reason "
        "compensation_failed) and its saga shown as needing an operator; one whose own output can never be valid "
        "is dead-lettered at once.",
    )
    crash_at: str | None = Field(default=None, description="A named crash point; off by default.")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve /metrics and /health/live|ready on this port."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address to serve on; 0.0.0.0 in a container.")
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("POKESAGA_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Send spans over OTLP/HTTP to this endpoint (e.g. http://127.0.0.1:4318); off by default.",
    )
    tracker_port: int = Field(
        default=6066, ge=0, le=65535, description="The tracker's web page, JSON API and /metrics."
    )
    stuck_after: float = Field(
        default=60.0, gt=0, description="Seconds without progress before the tracker calls a saga stuck."
    )
    health_interval: float = Field(default=1.0, gt=0, description="Seconds between readiness checks.")
    liveness_timeout: float = Field(
        default=30.0, gt=0, description="Not alive when the event loop has not run a check for this long."
    )
    kafka_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "pokesaga",
        description="Where the local broker's jars and state are kept between runs.",
    )
    batch_size: int = Field(default=500, ge=1, description="Most records handled per transaction.")
    poll_timeout_ms: int = Field(default=200, ge=1)
    linger_ms: int = Field(default=0, ge=0, description="Producer linger; 0 measured fastest here.")
    uvloop: bool = Field(default=False, description="Run the event loop on uvloop (pip install 'pokesaga[fast]').")
    inbox_retention_hours: float = Field(
        default=24,
        gt=0,
        description="How long an applied event id is remembered, for copies that come under new offsets (an outbox "
        "row published again, a client sending twice). Records read again from the broker, at any age, are known by "
        "the consumer's position instead. Must exceed how long a service may stay down with unsent outbox rows.",
    )
    rebuild_new_databases: bool = Field(
        default=True,
        description="A service database found created empty means its state was lost: rebuild it from the topics "
        "(its consumer groups moved to the earliest records). False: take the groups' positions as they are.",
    )
    outbox_grace_seconds: float = Field(
        default=5.0,
        gt=0,
        description="An outbox row still unpublished this long after a running instance first saw it was left by an "
        "instance that died after its local commit: a running instance publishes it (a live one needs milliseconds).",
    )
    tracker_retention_hours: float = Field(
        default=24,
        gt=0,
        description="How long the tracker keeps a finished saga (from its outcome); sagas with no outcome are kept.",
    )
    max_message_bytes: int = Field(
        default=1_000_000,
        ge=10_000,
        description="Largest record pokesaga publishes (value and headers). Keep it under the topics' "
        "max.message.bytes (1 MiB by default): an event that would exceed it fails the record that caused it.",
    )
    inline_batch_max: int = Field(
        default=8, ge=0, description="Batches up to this many records are applied on the event loop, not a thread."
    )

    @field_validator("faults")
    @classmethod
    def _valid_faults(cls, value: str | None) -> str | None:
        try:
            parse_faults(value)
        except ValueError as exc:
            raise ValueError(f"POKESAGA_FAULTS: {exc}") from None
        return value

    @field_validator("stall")
    @classmethod
    def _valid_stall(cls, value: str | None) -> str | None:
        for participant in parse_stall(value):
            service = participant.removesuffix(".compensations")
            if cls.SERVICES and service not in cls.SERVICES:
                names = [*cls.SERVICES, *(f"{s}.compensations" for s in cls.SERVICES)]
                close = _did_you_mean(participant, names)
                raise ValueError(
                    f"unknown participant {participant!r}{close}; expected one of {', '.join(cls.SERVICES)}"
                    " (or SERVICE.compensations)"
                )
        return value or None

    @staticmethod
    def valid_database_url(value: str | None) -> str | None:
        """A field validator for a saga's ``<service>_db_url`` fields (see check_database_url)."""
        if value:
            check_database_url(value)
        return value

    @field_validator("crash_at")
    @classmethod
    def _known_crash_point(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value not in crash.POINTS:
            close = _did_you_mean(value, crash.POINTS)
            raise ValueError(
                f"unknown crash point {value!r}{close}; expected one of {', '.join(crash.POINTS)}, or unset"
            )
        return value

    @field_validator("retry", "compensation_retry", mode="before")
    @classmethod
    def _known_policy_fields(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name == "compensation_retry" and isinstance(value, dict) and "maximum_attempts" in value:
            raise ValueError(
                "maximum_attempts is no longer read here: set POKESAGA_COMPENSATION_ATTEMPTS (a compensation still "
                "failing after that many attempts is dead-lettered; default 20)"
            )
        _check_policy_fields(value, "")
        return value

    @field_validator("compensation_attempts", mode="before")
    @classmethod
    def _whole_attempts(cls, value: Any) -> Any:
        text = str(value).strip()
        if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
            shown = text if len(text) <= 60 else text[:60] + "…"
            raise ValueError(f"expected a whole number of attempts, 1 or more; got {shown!r}")
        return int(text)

    @field_validator("step_retry", mode="before")
    @classmethod
    def _known_steps(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for step, policy in value.items():
                if cls.SERVICES and step not in cls.SERVICES:
                    close = _did_you_mean(step, cls.SERVICES)
                    raise ValueError(f"unknown step {step!r}{close}; expected one of {', '.join(cls.SERVICES)}")
                _check_policy_fields(policy, f"{step}.")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _valid_bootstrap(cls, value: str | None) -> str | None:
        for server in value.split(",") if value else ():
            host, colon, port = server.strip().rpartition(":")
            valid_port = not colon or (bool(host) and port.isdigit() and 0 < int(port) < 65536)
            if not server.strip() or not valid_port:
                raise ValueError(f"expected host:port[,host:port...], e.g. 127.0.0.1:9092; got {value!r}")
        return value

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

    @model_validator(mode="after")
    def _security_whole(self) -> Settings:
        """Security settings that only make sense together: refused, not ignored (a CA file with
        PLAINTEXT would send everything in clear while the operator believes it encrypted)."""
        protocol = self.kafka_security_protocol
        tls = protocol in ("SSL", "SASL_SSL")
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

    @field_validator("heartbeat_interval_ms")
    @classmethod
    def _heartbeat_within_session(cls, value: int, info: ValidationInfo) -> int:
        session = info.data.get("session_timeout_ms")
        if session is not None and value * 3 > session:
            raise ValueError(
                f"{value} is more than a third of POKESAGA_SESSION_TIMEOUT_MS ({session}): "
                "a member would be dropped between two heartbeats"
            )
        return value

    def group_membership(self) -> dict[str, Any]:
        """How a participant's consumer takes part in its group (see session_timeout_ms, group_instance_id)."""
        return {
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "group_instance_id": self.group_instance_id,
        }

    def retry_policy(self, participant: str, compensator: bool) -> RetryPolicy:
        if compensator:
            return self.compensation_retry.model_copy(update={"maximum_attempts": self.compensation_attempts})
        return self.step_retry.get(participant, self.retry)

    def db_url(self, service: str) -> str:
        """The database of ``service``: its override, else a SQLite file in data_dir."""
        if self.SERVICES and service not in self.SERVICES:
            raise ValueError(f"unknown service {service!r}; expected one of {', '.join(self.SERVICES)}")
        override = getattr(self, f"{service}_db_url", None)
        if override:
            return str(override)
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    @property
    def bootstrap(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("no Kafka broker configured (KAFKA_BOOTSTRAP_SERVERS is unset)")
        return self.kafka_bootstrap_servers


def _did_you_mean(value: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_policy_fields(policy: Any, prefix: str) -> None:
    """A retry policy given as a mapping names only RetryPolicy's fields (a typo is not ignored)."""
    if not isinstance(policy, dict):
        return
    fields = list(RetryPolicy.model_fields)
    for key in policy:
        if key not in fields:
            close = _did_you_mean(str(key), fields)
            raise ValueError(f"unknown retry field {prefix}{key}{close}; expected {', '.join(fields)}")


def mask_password(url: str) -> str:
    """``url`` with the password of its user info, if any, shown as ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def check_database_url(url: str) -> None:
    """Raise ValueError, saying what to do, unless ``url`` is a database pokesaga can open:
    a parseable SQLAlchemy URL, of a known dialect, whose synchronous driver is installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = mask_password(url)
    examples = "e.g. postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE or sqlite:///PATH/TO/FILE.db"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(f"could not parse {shown!r} as a database URL; expected {examples}") from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"unknown kind of database {parsed.drivername!r} in {shown!r}; expected {examples}") from None
    if dialect.is_async:
        raise ValueError(f"{parsed.drivername!r} is an asyncio driver; pokesaga needs a synchronous one, {examples}")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ValueError(
            f"the driver of {parsed.drivername!r} is not installed (no module named {exc.name!r}): install it "
            "in pokesaga's environment, or use postgresql+psycopg:// (pip install 'pokesaga[postgres]') or sqlite:///"
        ) from None
