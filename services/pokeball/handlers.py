"""Pokeball's step: throw a ball from the trainer's bag."""

from __future__ import annotations

from contracts.events import OutOfPokeballs, PokemonBrokeFree, PokemonCaught, PokemonWeakened, Step
from contracts.rng import saga_rng
from engine.participant import UnitOfWork
from services.pokeball import model
from services.pokeball.tables import PokeballRecords


def throw_pokeball(
    event: PokemonWeakened, uow: UnitOfWork[PokeballRecords]
) -> list[PokemonCaught | PokemonBrokeFree | OutOfPokeballs]:
    """Every throw uses a ball; the catch roll is the mainline formula, seeded by the saga id."""
    trainer = event.trainer.name
    recorded = uow.recorded[0] if uow.recorded else None  # rebuilding: the bag may be mid-replay
    bag = uow.records.bag(trainer, uow.settings.starter_balls)
    try:
        if isinstance(recorded, OutOfPokeballs):
            raise model.OutOfBalls
        if recorded is not None:
            bag.take_recorded()
        else:
            bag.take_one()
    except model.OutOfBalls:
        uow.records.save_bag(trainer, bag)  # as found: a new trainer's empty bag is kept
        uow.records.add_throw(
            saga_id=uow.saga_id,
            trainer=trainer,
            pokemon=event.pokemon.name,
            ball=None,
            shakes=0,
            outcome="out_of_balls",
        )
        return [
            OutOfPokeballs(
                trainer=event.trainer, pokemon=event.pokemon, reason="out_of_pokeballs", failed_step=Step.POKEBALL
            )
        ]
    uow.records.save_bag(trainer, bag)
    if isinstance(recorded, PokemonCaught | PokemonBrokeFree):  # the roll as it came out the first time
        shakes = recorded.shakes
    else:
        shakes = model.shakes(event.pokemon, saga_rng(uow.saga_id, "catch"))
    caught = shakes == 4
    uow.records.add_throw(
        saga_id=uow.saga_id,
        trainer=trainer,
        pokemon=event.pokemon.name,
        ball=model.POKE_BALL,
        shakes=shakes,
        outcome="caught" if caught else "broke_free",
    )
    if caught:
        return [PokemonCaught(trainer=event.trainer, pokemon=event.pokemon, ball=model.POKE_BALL, shakes=shakes)]
    return [
        PokemonBrokeFree(
            trainer=event.trainer, pokemon=event.pokemon, reason="broke_free", failed_step=Step.POKEBALL, shakes=shakes
        )
    ]


def give_up(event: PokemonWeakened, uow: UnitOfWork[PokeballRecords], reason: str, detail: str) -> PokemonBrokeFree:
    """The step could not be done (retries exhausted, non-retryable error): record it; no ball was used."""
    uow.records.add_throw(
        saga_id=uow.saga_id,
        trainer=event.trainer.name,
        pokemon=event.pokemon.name,
        ball=None,
        shakes=0,
        outcome=f"failed:{reason}",
    )
    return PokemonBrokeFree(
        trainer=event.trainer, pokemon=event.pokemon, reason=reason, failed_step=Step.POKEBALL, detail=detail
    )
