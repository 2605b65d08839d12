"""Status rules: who can be paralyzed."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.events import Pokemon, Status


@dataclass(frozen=True)
class ParalysisResult:
    pokemon: Pokemon
    previous_status: Status
    failure: str | None = None


def paralyze(pokemon: Pokemon) -> ParalysisResult:
    """An Electric-type Pokémon cannot be paralyzed; a fainted one (hp 0) neither."""
    if "Electric" in pokemon.types:
        return ParalysisResult(pokemon, pokemon.status, failure="electric_type_immune")
    if pokemon.hp == 0 or pokemon.status is Status.FAINTED:
        return ParalysisResult(pokemon, pokemon.status, failure="fainted")
    paralyzed = pokemon.model_copy(update={"status": Status.PARALYZED})
    return ParalysisResult(paralyzed, pokemon.status)
