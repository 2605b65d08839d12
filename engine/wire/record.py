"""A record as the engine handles it: what aiokafka's ``ConsumerRecord`` has, and a parked record too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Record(Protocol):
    """A record as the loop hands it over: aiokafka's ConsumerRecord has these, and so do tests' own."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
