"""Status's compensation: restore the previous status, then announce CaptureFailed."""

from __future__ import annotations

from contracts.events import CaptureFailed, Failure, Status, Step
from engine.participant import Rejected, UnitOfWork
from services.status.tables import StatusRecords


def undo_paralyze(event: Failure, uow: UnitOfWork[StatusRecords]) -> list[CaptureFailed]:
    """Put back the status the Pokémon had, and end the saga with CaptureFailed."""
    record = uow.records.get(uow.saga_id)
    if record is None:
        raise Rejected("unknown_saga", f"status never saw saga {uow.saga_id!r}: it never started")
    undone, pokemon = event.undone, event.pokemon
    if uow.records.restore(uow.saga_id):
        undone = (*undone, Step.STATUS)
        pokemon = pokemon.model_copy(update={"status": Status(record["previous_status"])})
    return [CaptureFailed(**event.model_dump(exclude={"undone", "pokemon"}), pokemon=pokemon, undone=undone)]
