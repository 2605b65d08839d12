"""Combat's step: weaken the paralyzed Pokémon."""

from __future__ import annotations

from contracts.events import PokemonFainted, PokemonParalyzed, PokemonWeakened, Step
from contracts.rng import saga_rng
from engine.participant import UnitOfWork
from services.combat import model
from services.combat.tables import CombatRecords


def attack(event: PokemonParalyzed, uow: UnitOfWork[CombatRecords]) -> list[PokemonWeakened | PokemonFainted]:
    """The lead uses False Swipe: never below 1 hp, but a Pokémon at 1 hp faints."""
    hit = model.false_swipe(event.trainer.lead, event.pokemon, saga_rng(uow.saga_id, "damage"))
    uow.records.add(
        saga_id=uow.saga_id,
        trainer=event.trainer.name,
        attacker=event.trainer.lead.name,
        pokemon=event.pokemon.name,
        hp_before=hit.hp_before,
        # A fainted Pokémon is the step's failure, not a change to undo: hp stays as found.
        damage=0 if hit.fainted else hit.damage,
        hp=hit.hp_before if hit.fainted else hit.hp_after,
        fainted=hit.fainted,
        outcome="fainted" if hit.fainted else "weakened",
    )
    if hit.fainted:
        return [PokemonFainted(trainer=event.trainer, pokemon=event.pokemon, reason="fainted", failed_step=Step.COMBAT)]
    weakened = event.pokemon.model_copy(update={"hp": hit.hp_after})
    return [PokemonWeakened(trainer=event.trainer, pokemon=weakened, hp_before=hit.hp_before, damage=hit.damage)]


def give_up(event: PokemonParalyzed, uow: UnitOfWork[CombatRecords], reason: str, detail: str) -> PokemonFainted:
    """The step could not be done (retries exhausted, non-retryable error): record it and fail."""
    uow.records.add(
        saga_id=uow.saga_id,
        trainer=event.trainer.name,
        attacker=event.trainer.lead.name,
        pokemon=event.pokemon.name,
        hp_before=event.pokemon.hp,
        damage=0,
        hp=event.pokemon.hp,
        fainted=False,
        outcome=f"failed:{reason}",
    )
    return PokemonFainted(
        trainer=event.trainer, pokemon=event.pokemon, reason=reason, failed_step=Step.COMBAT, detail=detail
    )
