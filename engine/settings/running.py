"""Settings: how a participant's loop runs (batch size, polling, the producer's linger, the event
loop) and how it is observed (metrics and health endpoints, tracing)."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from engine.settings.base import SettingsGroup


class RunningSettings(SettingsGroup):
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve /metrics and /health/live|ready on this port."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address to serve on; 0.0.0.0 in a container.")
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("POKESAGA_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Send spans over OTLP/HTTP to this endpoint (e.g. http://127.0.0.1:4318); off by default.",
    )
    health_interval: float = Field(default=1.0, gt=0, description="Seconds between readiness checks.")
    liveness_timeout: float = Field(
        default=30.0, gt=0, description="Not alive when the event loop has not run a check for this long."
    )
    batch_size: int = Field(default=500, ge=1, description="Most records handled per transaction.")
    poll_timeout_ms: int = Field(
        default=200,
        ge=1,
        description="Longest one poll waits for records, in ms; an idle participant deletes its published outbox "
        "rows within one.",
    )
    linger_ms: int = Field(default=0, ge=0, description="Producer linger; 0 measured fastest here.")
    uvloop: bool = Field(
        default=True,
        description="Run the services' event loop on uvloop where it is installed (asyncio's otherwise); never over "
        "TLS, where uvloop closes each connection only after a 30 s shutdown timeout.",
    )
    inline_batch_max: int = Field(
        default=8, ge=0, description="Batches up to this many records are applied on the event loop, not a thread."
    )
