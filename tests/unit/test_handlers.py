"""Each service's handler and compensation, run alone through the engine's test kit
(engine.testing): one transaction on the service's own tables, in memory, no broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

import compensations.combat
import compensations.pokeball
import compensations.status
import services.combat.handlers as combat
import services.delivery.handlers as delivery
import services.pokeball.handlers as pokeball
import services.status.handlers as status
from capture.saga import CAPTURE
from capture.settings import Settings
from contracts.events import (
    CaptureFailed,
    DeliveryFailed,
    Event,
    Failure,
    OutOfPokeballs,
    ParalysisFailed,
    Pokemon,
    PokemonBrokeFree,
    PokemonCaught,
    PokemonDelivered,
    PokemonEncountered,
    PokemonFainted,
    PokemonHealed,
    PokemonParalyzed,
    PokemonReleased,
    PokemonWeakened,
    Status,
    Step,
    Trainer,
)
from engine.participant import Rejected
from engine.testing import HandlerEnvironment

pytestmark = pytest.mark.no_database

Kit = Callable[..., HandlerEnvironment]

SACHA = Trainer(name="Sacha")
MEWTWO = Pokemon(name="Mewtwo")  # full hp, catch rate 3: nearly always breaks free
CATERPIE = Pokemon(name="Caterpie", hp=1, status=Status.PARALYZED)  # catch rate 255 at 1 hp: always caught


@pytest.fixture
def kit() -> Iterator[Kit]:
    """``kit("pokeball", starter_balls=1)``: a new environment for that service, with those settings."""
    made: list[HandlerEnvironment] = []

    def make(service: str, **settings: Any) -> HandlerEnvironment:
        made.append(HandlerEnvironment(CAPTURE.services[service], settings=Settings(**settings)))
        return made[-1]

    yield make
    for env in made:
        env.close()


def encountered(pokemon: Pokemon = MEWTWO) -> PokemonEncountered:
    return PokemonEncountered(trainer=SACHA, pokemon=pokemon)


def paralyzed(pokemon: Pokemon = MEWTWO) -> PokemonParalyzed:
    return PokemonParalyzed(
        trainer=SACHA, pokemon=pokemon.model_copy(update={"status": Status.PARALYZED}), previous_status=pokemon.status
    )


def weakened(pokemon: Pokemon = CATERPIE) -> PokemonWeakened:
    return PokemonWeakened(trainer=SACHA, pokemon=pokemon, hp_before=pokemon.max_hp, damage=pokemon.max_hp - pokemon.hp)


def caught(pokemon: Pokemon = CATERPIE) -> PokemonCaught:
    return PokemonCaught(trainer=SACHA, pokemon=pokemon, ball="poke_ball", shakes=4)


def failure(cls: type[Failure], step: Step, reason: str, pokemon: Pokemon = MEWTWO, **more: Any) -> Failure:
    return cls(trainer=SACHA, pokemon=pokemon, reason=reason, failed_step=step, **more)


def rows(env: HandlerEnvironment) -> list[dict[str, Any]]:
    with env.records() as records:
        found: list[dict[str, Any]] = records.for_trainer(SACHA.name)
        return found


def balls(env: HandlerEnvironment) -> int | None:
    with env.records() as records:
        left: int | None = records.balls(SACHA.name)
        return left


# -- one happy path per step ----------------------------------------------------------


def test_status_paralyzes_the_pokemon_and_remembers_the_status_it_had(kit: Kit) -> None:
    env = kit("status")
    poisoned = MEWTWO.model_copy(update={"status": Status.POISONED})
    events = env.run(status.paralyze, encountered(poisoned), saga_id="s1")
    assert events == [
        PokemonParalyzed(
            trainer=SACHA,
            pokemon=poisoned.model_copy(update={"status": Status.PARALYZED}),
            previous_status=Status.POISONED,
        )
    ]
    assert rows(env) == [
        {"saga_id": "s1", "trainer": "Sacha", "pokemon": "Mewtwo", "previous_status": "POISONED",
         "status": "PARALYZED", "outcome": "paralyzed"},
    ]  # fmt: skip


def test_combat_weakens_the_pokemon_and_records_the_hp_it_took(kit: Kit) -> None:
    env = kit("combat")
    (event,) = env.run(combat.attack, paralyzed(), saga_id="s1")
    assert isinstance(event, PokemonWeakened)
    assert 1 <= event.pokemon.hp < MEWTWO.max_hp
    assert (event.hp_before, event.hp_before - event.damage) == (MEWTWO.max_hp, event.pokemon.hp)
    assert rows(env) == [
        {"saga_id": "s1", "trainer": "Sacha", "attacker": "Pikachu", "pokemon": "Mewtwo", "hp_before": MEWTWO.max_hp,
         "damage": event.damage, "hp": event.pokemon.hp, "fainted": False, "outcome": "weakened", "healed": False},
    ]  # fmt: skip


def test_pokeball_throws_a_ball_from_the_bag_and_catches(kit: Kit) -> None:
    env = kit("pokeball", starter_balls=5)
    events = env.run(pokeball.throw_pokeball, weakened(), saga_id="s1")
    assert events == [caught()]
    assert balls(env) == 4
    assert rows(env) == [
        {"saga_id": "s1", "trainer": "Sacha", "pokemon": "Caterpie", "ball": "poke_ball", "shakes": 4,
         "outcome": "caught", "refunded": False},
    ]  # fmt: skip


def test_delivery_places_in_the_party_then_in_the_pc_then_finds_both_full(kit: Kit) -> None:
    env = kit("delivery", party_size=1, pc_capacity=1)
    assert env.run(delivery.deliver, caught(), saga_id="s1") == [
        PokemonDelivered(trainer=SACHA, pokemon=CATERPIE, location="party", slot=1)
    ]
    assert env.run(delivery.deliver, caught(), saga_id="s2") == [
        PokemonDelivered(trainer=SACHA, pokemon=CATERPIE, location="pc", slot=1)
    ]
    assert env.run(delivery.deliver, caught(), saga_id="s3") == [
        failure(DeliveryFailed, Step.DELIVERY, "party_and_pc_full", CATERPIE)
    ]
    assert sorted((r["saga_id"], r["location"], r["slot"], r["outcome"]) for r in rows(env)) == [
        ("s1", "party", 1, "delivered"), ("s2", "pc", 1, "delivered"), ("s3", None, None, "full"),
    ]  # fmt: skip


# -- a compensation with nothing to undo passes the chain on --------------------------


def _fainted(env: HandlerEnvironment) -> None:
    (event,) = env.run(combat.attack, paralyzed(MEWTWO.model_copy(update={"hp": 1})), saga_id="s1")
    assert isinstance(event, PokemonFainted)


def _failed(env: HandlerEnvironment) -> None:
    env.run(combat.give_up, paralyzed(), "retries_exhausted", "TimeoutError", saga_id="s1")


@pytest.mark.parametrize("arrange", [_fainted, _failed], ids=["fainted", "failed"])
def test_combat_s_undo_of_an_attack_that_took_no_hp_passes_the_chain_on(
    kit: Kit, arrange: Callable[[HandlerEnvironment], None]
) -> None:
    env = kit("combat")
    arrange(env)
    before = rows(env)
    released = failure(PokemonReleased, Step.DELIVERY, "party_and_pc_full", undone=(Step.POKEBALL,))
    events = env.run(compensations.combat.undo_attack, released, saga_id="s1")
    assert events == [failure(PokemonHealed, Step.DELIVERY, "party_and_pc_full", undone=(Step.POKEBALL,))]
    assert rows(env) == before


def test_a_second_undo_of_the_same_attack_heals_nothing(kit: Kit) -> None:
    env = kit("combat")
    (hit,) = env.run(combat.attack, paralyzed(), saga_id="s1")
    broke_free = failure(PokemonBrokeFree, Step.POKEBALL, "broke_free", hit.pokemon, shakes=2)
    first = env.run(compensations.combat.undo_attack, broke_free, saga_id="s1", event_id="e1")
    assert first == [failure(PokemonHealed, Step.POKEBALL, "broke_free", paralyzed().pokemon, undone=(Step.COMBAT,))]
    second = env.run(compensations.combat.undo_attack, broke_free, saga_id="s1", event_id="e2")
    assert second == [failure(PokemonHealed, Step.POKEBALL, "broke_free", hit.pokemon)]
    assert [(r["hp"], r["outcome"], r["healed"]) for r in rows(env)] == [(MEWTWO.max_hp, "healed", True)]


def _broke_free(env: HandlerEnvironment) -> None:
    (event,) = env.run(pokeball.throw_pokeball, weakened(MEWTWO), saga_id="s1")
    assert isinstance(event, PokemonBrokeFree)


def _out_of_balls(env: HandlerEnvironment) -> None:
    with env.records() as records:
        records.save_bag(SACHA.name, records.bag(SACHA.name, 0))  # an empty bag
    (event,) = env.run(pokeball.throw_pokeball, weakened(), saga_id="s1")
    assert isinstance(event, OutOfPokeballs)


def _gave_up(env: HandlerEnvironment) -> None:
    env.run(pokeball.give_up, weakened(), "retries_exhausted", "TimeoutError", saga_id="s1")


@pytest.mark.parametrize(
    "arrange", [_broke_free, _out_of_balls, _gave_up], ids=["broke_free", "out_of_balls", "gave_up"]
)
def test_pokeball_s_undo_of_a_throw_that_caught_nothing_refunds_nothing(
    kit: Kit, arrange: Callable[[HandlerEnvironment], None]
) -> None:
    env = kit("pokeball", starter_balls=5)
    arrange(env)
    before, balls_before = rows(env), balls(env)
    delivery_failed = failure(DeliveryFailed, Step.DELIVERY, "party_and_pc_full")
    events = env.run(compensations.pokeball.undo_throw, delivery_failed, saga_id="s1")
    assert events == [failure(PokemonReleased, Step.DELIVERY, "party_and_pc_full")]  # POKEBALL not undone
    assert (rows(env), balls(env)) == (before, balls_before)


def test_a_second_undo_of_the_same_throw_refunds_nothing(kit: Kit) -> None:
    env = kit("pokeball", starter_balls=5)
    env.run(pokeball.throw_pokeball, weakened(), saga_id="s1")
    assert balls(env) == 4
    delivery_failed = failure(DeliveryFailed, Step.DELIVERY, "party_and_pc_full", CATERPIE)
    first = env.run(compensations.pokeball.undo_throw, delivery_failed, saga_id="s1", event_id="e1")
    assert first == [failure(PokemonReleased, Step.DELIVERY, "party_and_pc_full", CATERPIE, undone=(Step.POKEBALL,))]
    assert balls(env) == 5
    second = env.run(compensations.pokeball.undo_throw, delivery_failed, saga_id="s1", event_id="e2")
    assert second == [failure(PokemonReleased, Step.DELIVERY, "party_and_pc_full", CATERPIE)]
    assert balls(env) == 5
    assert [(r["outcome"], r["refunded"]) for r in rows(env)] == [("released", True)]


def test_status_s_undo_after_paralysis_failed_ends_the_saga_with_nothing_restored(kit: Kit) -> None:
    env = kit("status")
    pikachu = Pokemon(name="Pikachu", status=Status.ASLEEP)
    (paralysis_failed,) = env.run(status.paralyze, encountered(pikachu), saga_id="s1")
    assert paralysis_failed == failure(ParalysisFailed, Step.STATUS, "electric_type_immune", pikachu)
    events = env.run(compensations.status.undo_paralyze, paralysis_failed, saga_id="s1")
    assert events == [failure(CaptureFailed, Step.STATUS, "electric_type_immune", pikachu)]
    assert [(r["status"], r["outcome"]) for r in rows(env)] == [("ASLEEP", "failed:electric_type_immune")]


def test_a_second_undo_of_the_same_paralysis_restores_nothing(kit: Kit) -> None:
    env = kit("status")
    poisoned = MEWTWO.model_copy(update={"status": Status.POISONED})
    (done,) = env.run(status.paralyze, encountered(poisoned), saga_id="s1")
    healed = failure(PokemonHealed, Step.POKEBALL, "broke_free", done.pokemon, undone=(Step.COMBAT,))
    first = env.run(compensations.status.undo_paralyze, healed, saga_id="s1", event_id="e1")
    assert first == [failure(CaptureFailed, Step.POKEBALL, "broke_free", poisoned, undone=(Step.COMBAT, Step.STATUS))]
    second = env.run(compensations.status.undo_paralyze, healed, saga_id="s1", event_id="e2")
    assert second == [failure(CaptureFailed, Step.POKEBALL, "broke_free", done.pokemon, undone=(Step.COMBAT,))]
    assert [(r["status"], r["outcome"]) for r in rows(env)] == [("POISONED", "restored")]


# -- a compensation of a saga its service never saw is refused ------------------------


@pytest.mark.parametrize(
    ("service", "undo", "event"),
    [
        ("pokeball", compensations.pokeball.undo_throw, failure(DeliveryFailed, Step.DELIVERY, "party_and_pc_full")),
        ("combat", compensations.combat.undo_attack, failure(PokemonBrokeFree, Step.POKEBALL, "broke_free")),
        ("status", compensations.status.undo_paralyze, failure(PokemonFainted, Step.COMBAT, "fainted")),
    ],
    ids=["pokeball", "combat", "status"],
)
def test_a_compensation_of_a_saga_its_service_never_saw_is_rejected(
    kit: Kit, service: str, undo: Callable[..., list[Event]], event: Failure
) -> None:
    env = kit(service)
    with pytest.raises(Rejected) as rejected:
        env.run(undo, event, saga_id="never-seen")
    assert rejected.value.reason.startswith("unknown_saga: ")
    assert "'never-seen'" in rejected.value.reason
    assert rows(env) == []


# -- giving up: each step records its failure and fails the saga ----------------------


@pytest.mark.parametrize(
    ("service", "give_up", "event", "failed", "row"),
    [
        (
            "status", status.give_up, encountered(), ParalysisFailed,
            {"pokemon": "Mewtwo", "previous_status": "HEALTHY", "status": "HEALTHY"},
        ),
        (
            "combat", combat.give_up, paralyzed(), PokemonFainted,
            {"attacker": "Pikachu", "pokemon": "Mewtwo", "hp_before": MEWTWO.max_hp, "damage": 0,
             "hp": MEWTWO.max_hp, "fainted": False, "healed": False},
        ),
        (
            "pokeball", pokeball.give_up, weakened(), PokemonBrokeFree,
            {"pokemon": "Caterpie", "ball": None, "shakes": 0, "refunded": False},
        ),
        (
            "delivery", delivery.give_up, caught(), DeliveryFailed,
            {"pokemon": "Caterpie", "level": CATERPIE.level, "location": None, "slot": None},
        ),
    ],
    ids=["status", "combat", "pokeball", "delivery"],
)  # fmt: skip
def test_a_step_that_gives_up_records_it_and_returns_its_failure_event(
    kit: Kit, service: str, give_up: Callable[..., Failure], event: Event, failed: type[Failure], row: dict[str, Any]
) -> None:
    env = kit(service)
    result = env.run(give_up, event, "non_retryable_error", "ValueError: boom", saga_id="s1")
    assert type(result) is failed
    assert (result.reason, result.detail, result.failed_step, result.undone) == (
        "non_retryable_error", "ValueError: boom", Step(service), ()
    )  # fmt: skip
    assert (result.trainer, result.pokemon) == (event.trainer, event.pokemon)
    assert rows(env) == [{"saga_id": "s1", "trainer": "Sacha", **row, "outcome": "failed:non_retryable_error"}]


def test_pokeball_giving_up_takes_no_ball(kit: Kit) -> None:
    env = kit("pokeball", starter_balls=5)
    env.run(pokeball.throw_pokeball, weakened(), saga_id="s1")
    env.run(pokeball.give_up, weakened(), "retries_exhausted", "TimeoutError", saga_id="s2")
    assert balls(env) == 4


# -- a rebuild takes the recorded decision again -------------------------------------


def test_a_rebuilt_throw_recorded_out_of_balls_takes_no_ball_though_the_bag_has_some(kit: Kit) -> None:
    env = kit("pokeball", starter_balls=5)
    recorded = failure(OutOfPokeballs, Step.POKEBALL, "out_of_pokeballs", CATERPIE)
    events = env.run(pokeball.throw_pokeball, weakened(), saga_id="s1", recorded=[recorded])
    assert events == [recorded]
    assert balls(env) == 5
    assert [(r["ball"], r["outcome"]) for r in rows(env)] == [(None, "out_of_balls")]


def test_a_rebuilt_throw_recorded_as_a_catch_takes_its_ball_even_from_an_empty_bag(kit: Kit) -> None:
    # The refund that made room for it may come later in the replay: the count dips below zero until then.
    env = kit("pokeball", starter_balls=0)
    events = env.run(pokeball.throw_pokeball, weakened(), saga_id="s1", recorded=[caught()])
    assert events == [caught()]
    assert balls(env) == -1
    assert [(r["ball"], r["outcome"]) for r in rows(env)] == [("poke_ball", "caught")]


def test_a_rebuilt_delivery_goes_to_the_recorded_location_and_slot(kit: Kit) -> None:
    env = kit("delivery")
    recorded = PokemonDelivered(trainer=SACHA, pokemon=CATERPIE, location="pc", slot=7)
    events = env.run(delivery.deliver, caught(), saga_id="s1", recorded=[recorded])
    assert events == [recorded]
    assert [(r["location"], r["slot"], r["outcome"]) for r in rows(env)] == [("pc", 7, "delivered")]


def test_a_rebuilt_delivery_recorded_as_failed_fails_again_though_there_is_room(kit: Kit) -> None:
    env = kit("delivery")
    recorded = failure(DeliveryFailed, Step.DELIVERY, "party_and_pc_full", CATERPIE)
    events = env.run(delivery.deliver, caught(), saga_id="s1", recorded=[recorded])
    assert events == [recorded]
    assert [(r["location"], r["slot"], r["outcome"]) for r in rows(env)] == [(None, None, "full")]


# -- the kit itself --------------------------------------------------------------------


def test_a_handler_that_raises_leaves_the_database_as_it_was(kit: Kit) -> None:
    env = kit("pokeball", starter_balls=5)
    env.run(pokeball.throw_pokeball, weakened(), saga_id="s1")
    misty = weakened().model_copy(update={"trainer": Trainer(name="Misty")})
    with pytest.raises(IntegrityError):  # saga s1 already threw: Misty's new bag goes with the failed insert
        env.run(pokeball.throw_pokeball, misty, saga_id="s1")
    with env.records() as records:
        assert records.balls("Misty") is None
        assert records.balls("Sacha") == 4


def test_a_rebuilt_throw_takes_the_recorded_roll_again_whatever_the_formula_says_now(kit: Kit) -> None:
    env = kit("pokeball", starter_balls=5)
    hard = MEWTWO.model_copy(update={"status": Status.PARALYZED})  # full hp, catch rate 3
    recorded = PokemonCaught(trainer=SACHA, pokemon=hard, ball="poke_ball", shakes=4)
    assert env.run(pokeball.throw_pokeball, weakened(hard), saga_id="s1", recorded=[recorded]) == [recorded]
    broke = failure(PokemonBrokeFree, Step.POKEBALL, "broke_free", CATERPIE, shakes=2)
    (again,) = env.run(pokeball.throw_pokeball, weakened(), saga_id="s2", recorded=[broke])
    assert isinstance(again, PokemonBrokeFree) and again.shakes == 2  # Caterpie at 1 hp, yet it broke free
