"""Delivery rules: the party holds a few, then the PC, then nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Location = Literal["party", "pc"]


class StorageFull(Exception):
    pass


@dataclass(frozen=True)
class Storage:
    """How full the trainer's party and PC are."""

    party: int
    pc: int
    party_size: int = 6
    pc_capacity: int = 30

    def deposit(self) -> tuple[Location, int]:
        """Where the next Pokémon goes: the party until full, then the PC; both full → StorageFull."""
        if self.party < self.party_size:
            return "party", self.party + 1
        if self.pc < self.pc_capacity:
            return "pc", self.pc + 1
        raise StorageFull
