"""Pokeball's compensation: release the Pokémon and refund the ball."""

from __future__ import annotations

from contracts.events import DeliveryFailed, PokemonReleased, Step
from engine.participant import Rejected, UnitOfWork
from services.pokeball.tables import PokeballRecords


def undo_throw(event: DeliveryFailed, uow: UnitOfWork[PokeballRecords]) -> list[PokemonReleased]:
    """A caught Pokémon that could not be delivered is released, and its ball goes back in the bag."""
    undone = event.undone
    throw = uow.records.get_throw(uow.saga_id)
    if throw is None:
        raise Rejected("unknown_saga", f"pokeball never threw in saga {uow.saga_id!r}: there is nothing to unwind")
    if throw["outcome"] == "caught" and not throw["refunded"]:
        bag = uow.records.bag(throw["trainer"], uow.settings.starter_balls)
        bag.refund_one()
        uow.records.save_bag(throw["trainer"], bag)
        uow.records.mark_released(uow.saga_id)
        undone = (*undone, Step.POKEBALL)
    return [PokemonReleased(**event.model_dump(exclude={"undone"}), undone=undone)]
