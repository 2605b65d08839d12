"""Settings: which brokers, and how a participant takes part in its consumer group and in the
topics pokesaga creates (partitions, replicas, the largest record). How a client authenticates and
encrypts is engine.settings.security's.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, StrictInt, ValidationInfo, field_validator

from engine.settings.base import SettingsGroup


class BrokerSettings(SettingsGroup):
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "POKESAGA_KAFKA_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port]; unset → provision a broker (Docker or local jars).",
    )
    partitions: int = Field(
        default=3, ge=1, le=256, description="Partitions of every topic pokesaga creates (existing topics keep theirs)."
    )
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
    max_message_bytes: int = Field(
        default=1_000_000,
        ge=10_000,
        description="Largest record pokesaga publishes (value and headers). Keep it under the topics' "
        "max.message.bytes (1 MiB by default): an event that would exceed it fails the record that caused it.",
    )
    publish_versions: dict[str, StrictInt] = Field(  # true is no version (pydantic alone would read 1)
        default_factory=dict,
        description="During a rollout, publish these events at an older version, by event type, as JSON: "
        '`{"CombatWon": 1}`; the fields added since are dropped (each has a default). Unset: every event at its '
        "current version. See docs/evolving-events.md.",
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _valid_bootstrap(cls, value: str | None) -> str | None:
        for server in value.split(",") if value else ():
            host, colon, port = server.strip().rpartition(":")
            valid_port = not colon or (bool(host) and port.isdigit() and 0 < int(port) < 65536)
            if not server.strip() or not valid_port:
                raise ValueError(f"expected host:port[,host:port...], e.g. 127.0.0.1:9092; got {value!r}")
        return value

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

    @property
    def bootstrap(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("no Kafka broker configured (KAFKA_BOOTSTRAP_SERVERS is unset)")
        return self.kafka_bootstrap_servers
