"""Settings of the tools beside the services: the local broker pokesaga provisions (where its jars
and state are kept) and the tracker (its port, its login, when it calls a saga stuck, how long it keeps one)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from engine.settings.base import SettingsGroup


class LocalSettings(SettingsGroup):
    tracker_port: int = Field(
        default=6066, ge=0, le=65535, description="The tracker's web page, JSON API and /metrics."
    )
    tracker_token: SecretStr | None = Field(
        default=None,
        description="Asks for a login on the tracker's page and JSON API: 'Authorization: Bearer <token>', or basic "
        "auth with any user and the token as the password. /metrics stays open. Unset: open to whoever reaches it.",
    )
    stuck_after: float = Field(
        default=60.0, gt=0, description="Seconds without progress before the tracker calls a saga stuck."
    )
    tracker_retention_hours: float = Field(
        default=24,
        gt=0,
        description="How long the tracker keeps a finished saga (from its outcome); sagas with no outcome are kept.",
    )
    kafka_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "pokesaga",
        description="Where the local broker's jars and state are kept between runs.",
        json_schema_extra={"shown_default": "`~/.cache/pokesaga`"},
    )
