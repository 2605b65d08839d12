"""Status's step: paralyze the wild Pokémon."""

from __future__ import annotations

from contracts.events import ParalysisFailed, PokemonEncountered, PokemonParalyzed, Step
from engine.participant import UnitOfWork
from services.status import model
from services.status.tables import StatusRecords


def paralyze(event: PokemonEncountered, uow: UnitOfWork[StatusRecords]) -> list[PokemonParalyzed | ParalysisFailed]:
    """Paralyze the Pokémon unless it is Electric-type or fainted."""
    result = model.paralyze(event.pokemon)
    uow.records.add(
        saga_id=uow.saga_id,
        trainer=event.trainer.name,
        pokemon=event.pokemon.name,
        previous_status=result.previous_status.value,
        status=result.pokemon.status.value,
        outcome=f"failed:{result.failure}" if result.failure else "paralyzed",
    )
    if result.failure:
        return [
            ParalysisFailed(
                trainer=event.trainer, pokemon=event.pokemon, reason=result.failure, failed_step=Step.STATUS
            )
        ]
    return [PokemonParalyzed(trainer=event.trainer, pokemon=result.pokemon, previous_status=result.previous_status)]


def give_up(event: PokemonEncountered, uow: UnitOfWork[StatusRecords], reason: str, detail: str) -> ParalysisFailed:
    """The step could not be done (retries exhausted, non-retryable error): record it and fail."""
    status = event.pokemon.status.value
    uow.records.add(
        saga_id=uow.saga_id,
        trainer=event.trainer.name,
        pokemon=event.pokemon.name,
        previous_status=status,
        status=status,
        outcome=f"failed:{reason}",
    )
    return ParalysisFailed(
        trainer=event.trainer, pokemon=event.pokemon, reason=reason, failed_step=Step.STATUS, detail=detail
    )
