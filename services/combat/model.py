"""Combat rules: the trainer's lead attacks with False Swipe."""

from __future__ import annotations

import random
from dataclasses import dataclass

from contracts.events import Pokemon

FALSE_SWIPE_POWER = 40


@dataclass(frozen=True)
class Attack:
    damage: int
    hp_before: int
    hp_after: int
    fainted: bool


def damage(attacker: Pokemon, defender: Pokemon, rng: random.Random) -> int:
    """Mainline damage formula for a 40-power move; attack/defense ratio from the levels.

    ``floor(floor(floor(2L/5 + 2) * P * A/D) / 50) + 2``, times a random 85..100 %.
    """
    base = ((2 * attacker.level) // 5 + 2) * FALSE_SWIPE_POWER * attacker.level // defender.level
    return max(1, (base // 50 + 2) * rng.randint(85, 100) // 100)


def false_swipe(attacker: Pokemon, defender: Pokemon, rng: random.Random) -> Attack:
    """Damage never takes hp below 1, except that a Pokémon already at 1 hp faints."""
    if defender.hp <= 1:
        return Attack(damage=defender.hp, hp_before=defender.hp, hp_after=0, fainted=True)
    dealt = min(damage(attacker, defender, rng), defender.hp - 1)
    return Attack(damage=dealt, hp_before=defender.hp, hp_after=defender.hp - dealt, fainted=False)
