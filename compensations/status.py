"""Status's compensation: restore the previous status, then announce CaptureFailed."""

from __future__ import annotations

import logging

from contracts.events import CaptureFailed, Event, Failure, Status, Step
from runtime.participant import UnitOfWork
from services.status.tables import StatusRecords

log = logging.getLogger(__name__)


def undo_paralyze(event: Failure, uow: UnitOfWork[StatusRecords]) -> list[Event]:
    """Put back the status the Pokémon had, and end the saga with CaptureFailed."""
    record = uow.records.get(uow.saga_id)
    if record is None:
        # The status step never saw this saga: it never started. Recorded (inbox), not announced.
        log.warning("compensation %s for saga %s that never started: ignored", type(event).__name__, uow.saga_id)
        return []
    undone, pokemon = event.undone, event.pokemon
    if uow.records.restore(uow.saga_id):
        undone = (*undone, Step.STATUS)
        pokemon = pokemon.model_copy(update={"status": Status(record["previous_status"])})
    return [CaptureFailed(**event.model_dump(exclude={"undone", "pokemon"}), pokemon=pokemon, undone=undone)]


HANDLERS = {"PokemonFainted": undo_paralyze, "PokemonHealed": undo_paralyze, "ParalysisFailed": undo_paralyze}
