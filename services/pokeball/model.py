"""Pokeball rules: the trainer's bag and the mainline catch formula."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from contracts.events import Pokemon, Status

POKE_BALL = "poke_ball"
BALL_BONUS = {POKE_BALL: 1.0}
STATUS_BONUS = {Status.ASLEEP: 2.0, Status.FROZEN: 2.0, Status.PARALYZED: 1.5, Status.POISONED: 1.5, Status.BURNED: 1.5}


class OutOfBalls(Exception):
    pass


@dataclass
class Bag:
    """A trainer's bag of balls; every throw uses one."""

    balls: int

    def take_one(self) -> None:
        if self.balls <= 0:
            raise OutOfBalls
        self.balls -= 1

    def take_recorded(self) -> None:
        """Replay a throw the history says happened, even if a refund that came before it
        has not been replayed yet (the count may dip below zero until it is)."""
        self.balls -= 1

    def refund_one(self) -> None:
        self.balls += 1


def modified_catch_rate(pokemon: Pokemon, ball: str = POKE_BALL) -> float:
    """Generation III+ ``a``: ((3·max − 2·hp) · rate · ball) / (3·max) · status bonus."""
    hp_factor = (3 * pokemon.max_hp - 2 * pokemon.hp) / (3 * pokemon.max_hp)
    return hp_factor * pokemon.catch_rate * BALL_BONUS[ball] * STATUS_BONUS.get(pokemon.status, 1.0)


def shake_threshold(a: float) -> int:
    """``b`` = 1048560 / sqrt(sqrt(16711680 / a)); each of 4 shakes succeeds if rand16 < b."""
    if a >= 255:
        return 65536
    return int(1048560 / math.sqrt(math.sqrt(16711680 / max(a, 1e-9))))


def catch_probability(pokemon: Pokemon, ball: str = POKE_BALL) -> float:
    """The chance that one throw catches ``pokemon``: (b / 65536)⁴, capped at 1."""
    return min(1.0, shake_threshold(modified_catch_rate(pokemon, ball)) / 65536) ** 4


def shakes(pokemon: Pokemon, rng: random.Random, ball: str = POKE_BALL) -> int:
    """How many of the four shake checks pass, in order; 4 means caught."""
    b = shake_threshold(modified_catch_rate(pokemon, ball))
    count = 0
    while count < 4 and rng.randrange(65536) < b:
        count += 1
    return count
