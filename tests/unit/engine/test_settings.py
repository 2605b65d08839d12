"""The engine's settings (engine.settings): what a consumer group's membership may be."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.settings import Settings


def test_a_heartbeat_longer_than_a_third_of_the_session_is_refused() -> None:
    with pytest.raises(ValidationError, match="more than a third of POKESAGA_SESSION_TIMEOUT_MS"):
        Settings(session_timeout_ms=6000, heartbeat_interval_ms=2500)
    assert Settings(session_timeout_ms=6000, heartbeat_interval_ms=2000).group_membership() == {
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 2000,
        "group_instance_id": None,
    }
