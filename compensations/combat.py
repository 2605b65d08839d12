"""Combat's compensation: restore the hp the attack took."""

from __future__ import annotations

from contracts.events import Failure, PokemonHealed, Step
from engine.participant import Rejected, UnitOfWork
from services.combat.tables import CombatRecords


def undo_attack(event: Failure, uow: UnitOfWork[CombatRecords]) -> list[PokemonHealed]:
    """Heal the Pokémon back to the hp it had before the False Swipe."""
    undone, pokemon = event.undone, event.pokemon
    attack = uow.records.get(uow.saga_id)
    if attack is None:
        raise Rejected("unknown_saga", f"combat never attacked in saga {uow.saga_id!r}: there is nothing to unwind")
    if uow.records.heal(uow.saga_id):
        undone = (*undone, Step.COMBAT)
        pokemon = pokemon.model_copy(update={"hp": attack["hp_before"]})
    return [PokemonHealed(**event.model_dump(exclude={"undone", "pokemon"}), pokemon=pokemon, undone=undone)]
