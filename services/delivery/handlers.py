"""Delivery's step: put the caught Pokémon in the party, else the PC."""

from __future__ import annotations

from contracts.events import DeliveryFailed, PokemonCaught, PokemonDelivered, Step
from engine.participant import UnitOfWork
from services.delivery import model
from services.delivery.tables import DeliveryRecords


def deliver(event: PokemonCaught, uow: UnitOfWork[DeliveryRecords]) -> list[PokemonDelivered | DeliveryFailed]:
    """The party holds party_size, then the PC holds pc_capacity; both full → DeliveryFailed."""
    trainer, pokemon = event.trainer, event.pokemon
    row = {"saga_id": uow.saga_id, "trainer": trainer.name, "pokemon": pokemon.name, "level": pokemon.level}
    recorded = uow.recorded[0] if uow.recorded else None  # rebuilding: slots as they were given
    try:
        if isinstance(recorded, PokemonDelivered):
            location, slot = recorded.location, recorded.slot
        elif isinstance(recorded, DeliveryFailed):
            raise model.StorageFull
        else:
            storage = uow.records.storage(trainer.name, uow.settings.party_size, uow.settings.pc_capacity)
            location, slot = storage.deposit()
    except model.StorageFull:
        uow.records.add(**row, location=None, slot=None, outcome="full")
        return [DeliveryFailed(trainer=trainer, pokemon=pokemon, reason="party_and_pc_full", failed_step=Step.DELIVERY)]
    uow.records.add(**row, location=location, slot=slot, outcome="delivered")
    return [PokemonDelivered(trainer=trainer, pokemon=pokemon, location=location, slot=slot)]


def give_up(event: PokemonCaught, uow: UnitOfWork[DeliveryRecords], reason: str, detail: str) -> DeliveryFailed:
    """The step could not be done (retries exhausted, non-retryable error): record it and fail."""
    uow.records.add(
        saga_id=uow.saga_id,
        trainer=event.trainer.name,
        pokemon=event.pokemon.name,
        level=event.pokemon.level,
        location=None,
        slot=None,
        outcome=f"failed:{reason}",
    )
    return DeliveryFailed(
        trainer=event.trainer, pokemon=event.pokemon, reason=reason, failed_step=Step.DELIVERY, detail=detail
    )
