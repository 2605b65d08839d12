"""Random draws seeded by the saga id, so replaying a saga draws the same numbers."""

from __future__ import annotations

import hashlib
import random


def saga_rng(saga_id: str, purpose: str) -> random.Random:
    """A generator private to one saga and one use (e.g. "catch", "damage")."""
    digest = hashlib.sha256(f"{saga_id}/{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))
