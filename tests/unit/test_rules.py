"""The domain rules of the four services: pure functions, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import pokedex
from contracts.events import Pokemon, Status
from contracts.rng import saga_rng
from services.combat.model import false_swipe
from services.delivery.model import Storage, StorageFull
from services.pokeball.model import Bag, OutOfBalls, catch_probability, modified_catch_rate, shakes
from services.status.model import paralyze

species = st.sampled_from(pokedex.NAMES)


@st.composite
def pokemon(draw: st.DrawFn, status: Status | None = None) -> Pokemon:
    name = draw(species)
    level = draw(st.integers(1, 100))
    max_hp = pokedex.lookup(name).max_hp(level)  # type: ignore[union-attr]
    hp = draw(st.integers(1, max_hp))
    chosen = status or draw(st.sampled_from([s for s in Status if s is not Status.FAINTED]))
    return Pokemon(name=name, level=level, hp=hp, max_hp=max_hp, status=chosen)


# -- status ---------------------------------------------------------------------------


def test_an_electric_type_cannot_be_paralyzed() -> None:
    result = paralyze(Pokemon(name="Pikachu"))
    assert result.failure == "electric_type_immune"
    assert result.pokemon.status is Status.HEALTHY


def test_a_dual_type_with_electric_cannot_be_paralyzed() -> None:
    assert paralyze(Pokemon(name="Zapdos")).failure == "electric_type_immune"


def test_a_fainted_pokemon_cannot_be_paralyzed() -> None:
    assert paralyze(Pokemon(name="Mewtwo", hp=0)).failure == "fainted"


def test_paralysis_remembers_the_previous_status() -> None:
    result = paralyze(Pokemon(name="Mewtwo", status=Status.POISONED))
    assert result.failure is None
    assert result.pokemon.status is Status.PARALYZED
    assert result.previous_status is Status.POISONED


# -- combat ---------------------------------------------------------------------------


@given(pokemon(), st.integers(1, 100), st.text(min_size=1, max_size=20))
def test_false_swipe_never_takes_hp_below_one(defender: Pokemon, lead_level: int, saga: str) -> None:
    hit = false_swipe(Pokemon(name="Pikachu", level=lead_level), defender, saga_rng(saga, "damage"))
    if defender.hp == 1:
        assert hit.fainted and hit.hp_after == 0
    else:
        assert not hit.fainted
        assert 1 <= hit.hp_after < defender.hp
        assert hit.hp_before - hit.damage == hit.hp_after


def test_a_pokemon_at_one_hp_faints() -> None:
    hit = false_swipe(Pokemon(name="Pikachu", level=60), Pokemon(name="Mewtwo", hp=1), saga_rng("s", "damage"))
    assert hit.fainted and hit.hp_after == 0


def test_damage_is_the_same_for_the_same_saga() -> None:
    lead, wild = Pokemon(name="Pikachu", level=60), Pokemon(name="Snorlax", level=40)
    assert false_swipe(lead, wild, saga_rng("saga-1", "damage")) == false_swipe(
        lead, wild, saga_rng("saga-1", "damage")
    )


# -- pokeball -------------------------------------------------------------------------


def test_a_paralyzed_pokemon_is_easier_to_catch() -> None:
    healthy = Pokemon(name="Mewtwo", hp=50, max_hp=200)
    paralyzed = healthy.model_copy(update={"status": Status.PARALYZED})
    assert catch_probability(paralyzed) > catch_probability(healthy)
    assert modified_catch_rate(paralyzed) == pytest.approx(1.5 * modified_catch_rate(healthy))


@given(pokemon())
def test_a_weaker_pokemon_is_never_harder_to_catch(wild: Pokemon) -> None:
    weaker = wild.model_copy(update={"hp": max(1, wild.hp // 2)})
    assert catch_probability(weaker) >= catch_probability(wild)


def test_the_catch_formula_matches_the_mainline_games() -> None:
    # Mewtwo (rate 3) at full hp, no status: a = 1, b = floor(1048560 / sqrt(sqrt(16711680))) = 16399
    full = Pokemon(name="Mewtwo", hp=200, max_hp=200)
    assert modified_catch_rate(full) == pytest.approx(1.0)
    assert catch_probability(full) == pytest.approx((16399 / 65536) ** 4)
    # a >= 255 always catches: Caterpie (255) paralyzed at a third of its hp.
    assert catch_probability(Pokemon(name="Caterpie", hp=10, max_hp=60, status=Status.PARALYZED)) == 1.0


@given(pokemon(), st.text(min_size=1, max_size=30))
def test_a_throw_shakes_between_zero_and_four_times_and_replays_identically(wild: Pokemon, saga: str) -> None:
    first = shakes(wild, saga_rng(saga, "catch"))
    assert 0 <= first <= 4
    assert shakes(wild, saga_rng(saga, "catch")) == first


@given(st.integers(0, 20), st.integers(0, 30))
def test_every_throw_spends_one_ball_and_none_is_refused(starting: int, throws: int) -> None:
    bag, thrown = Bag(starting), 0
    for _ in range(throws):
        try:
            bag.take_one()
            thrown += 1
        except OutOfBalls:
            break
    assert thrown == min(starting, throws)
    assert bag.balls == starting - thrown >= 0


def test_an_empty_bag_refuses() -> None:
    with pytest.raises(OutOfBalls):
        Bag(0).take_one()


# -- delivery -------------------------------------------------------------------------


@given(st.integers(1, 10), st.integers(0, 40), st.integers(0, 80))
def test_the_party_fills_first_then_the_pc_and_never_overflows(
    party_size: int, pc_capacity: int, arrivals: int
) -> None:
    storage, placed = Storage(0, 0, party_size, pc_capacity), []
    for _ in range(arrivals):
        try:
            location, slot = storage.deposit()
        except StorageFull:
            break
        placed.append((location, slot))
        party, pc = storage.party + (location == "party"), storage.pc + (location == "pc")
        storage = Storage(party, pc, party_size, pc_capacity)
    assert storage.party <= party_size and storage.pc <= pc_capacity
    assert len(placed) == min(arrivals, party_size + pc_capacity)
    assert [p for p in placed if p[0] == "party"] == [("party", i) for i in range(1, min(arrivals, party_size) + 1)]


def test_the_seventh_pokemon_goes_to_the_pc() -> None:
    assert Storage(party=6, pc=0).deposit() == ("pc", 1)


def test_a_full_party_and_pc_refuse() -> None:
    with pytest.raises(StorageFull):
        Storage(party=6, pc=30).deposit()
