"""Every event of the capture saga, as frozen pydantic v2 models.

An event carries the trainer and the wild Pokémon as they stand after the step that
published it, so each service needs nothing but the event to do its own step. Failure
and compensation events also carry why the saga failed and which steps were undone.
New fields get defaults, and the envelope's ``dataversion`` says which shape this is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts import pokedex, topics
from engine import events as engine_events
from engine.events import bounded

DATA_VERSION = 1

# Every number and string a service stores has a bound here, the same on every database:
# a value out of bounds is refused at the door, with the field's name, never by a table.
MAX_HP = 9999
MAX_SLOT = 1_000_000

Name = Annotated[str, bounded(64, min_length=1)]
Species = Annotated[str, bounded(40, min_length=1)]
Word = Annotated[str, bounded(20, min_length=1)]  # a type, a ball


class Model(BaseModel):
    # Tolerant reader: fields added by a newer producer are ignored, not rejected.
    model_config = ConfigDict(frozen=True, extra="ignore")


class Status(StrEnum):
    HEALTHY = "HEALTHY"
    PARALYZED = "PARALYZED"
    ASLEEP = "ASLEEP"
    POISONED = "POISONED"
    BURNED = "BURNED"
    FROZEN = "FROZEN"
    FAINTED = "FAINTED"


class Step(StrEnum):
    STATUS = "status"
    COMBAT = "combat"
    POKEBALL = "pokeball"
    DELIVERY = "delivery"


class Pokemon(Model):
    """A Pokémon. Every field but ``name`` is filled from the Pokédex when omitted."""

    name: Species = Field(description="Species name from the first-generation Pokédex.")
    level: int = Field(default=pokedex.DEFAULT_LEVEL, ge=1, le=100)
    hp: int = Field(default=None, ge=0, le=MAX_HP, description="Defaults to max_hp.")  # type: ignore[assignment]
    max_hp: int = Field(default=None, ge=1, le=MAX_HP, description="Defaults to the species' HP at level.")  # type: ignore[assignment]
    status: Status = Status.HEALTHY
    types: tuple[Word, ...] = Field(
        default=None,  # type: ignore[arg-type]
        min_length=1,
        max_length=2,
        description="Defaults to the species' types.",
    )
    catch_rate: int = Field(default=None, ge=1, le=255, description="Defaults to the species'.")  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _fill_from_pokedex(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return value
        species = pokedex.lookup(value["name"])
        if species is None:
            raise ValueError(pokedex.unknown(value["name"]))
        filled = dict(value, name=species.name)
        level = filled.get("level")
        level = level if isinstance(level, int) and 1 <= level <= 100 else pokedex.DEFAULT_LEVEL
        if filled.get("max_hp") is None:
            filled["max_hp"] = species.max_hp(level)
        if filled.get("hp") is None:
            filled["hp"] = 0 if filled.get("status") == Status.FAINTED else filled["max_hp"]
        if filled.get("types") is None:
            filled["types"] = species.types
        if filled.get("catch_rate") is None:
            filled["catch_rate"] = species.catch_rate
        return filled

    @model_validator(mode="after")
    def _hp_within_max(self) -> Pokemon:
        if self.hp > self.max_hp:
            raise ValueError(f"hp {self.hp} exceeds max_hp {self.max_hp}")
        return self


def _default_lead() -> Pokemon:
    return Pokemon(name="Pikachu", level=60)


class Trainer(Model):
    name: Name
    lead: Pokemon = Field(default_factory=_default_lead, description="Defaults to a level-60 Pikachu.")


class Event(engine_events.Event):
    """Base of every saga event: who is catching what."""

    trainer: Trainer
    pokemon: Pokemon


# -- the happy path -------------------------------------------------------------------


class PokemonEncountered(Event):
    """The start event: a trainer meets a wild Pokémon."""

    topic: ClassVar[str] = topics.STATUS


class PokemonParalyzed(Event):
    topic: ClassVar[str] = topics.COMBAT
    previous_status: Status


class PokemonWeakened(Event):
    topic: ClassVar[str] = topics.POKEBALL
    hp_before: int = Field(ge=0, le=MAX_HP)
    damage: int = Field(ge=0, le=MAX_HP)


class PokemonCaught(Event):
    topic: ClassVar[str] = topics.DELIVERY
    ball: Word
    shakes: int = Field(ge=0, le=4)


class PokemonDelivered(Event):
    """The success outcome: the Pokémon is in the trainer's party or PC."""

    topic: ClassVar[str] = topics.OUTCOMES
    location: Literal["party", "pc"]
    slot: int = Field(ge=1, le=MAX_SLOT)


# -- failures and compensations ------------------------------------------------------


class Failure(Event, engine_events.FailureEvent):
    """A step failed (or a compensation passed the failure on)."""

    topic: ClassVar[str] = topics.FAILURES  # each failure below names its own
    former_topics: ClassVar[tuple[str, ...]] = (topics.FAILURES,)  # read, for records written before
    failed_step: Step
    undone: tuple[Step, ...] = Field(default=(), max_length=4, description="Steps undone so far, newest first.")


class ParalysisFailed(Failure):
    topic: ClassVar[str] = topics.STATUS_FAILURES


class PokemonFainted(Failure):
    topic: ClassVar[str] = topics.COMBAT_FAILURES


class PokemonBrokeFree(Failure):
    topic: ClassVar[str] = topics.POKEBALL_FAILURES
    shakes: int = Field(default=0, ge=0, le=3)


class OutOfPokeballs(Failure):
    topic: ClassVar[str] = topics.POKEBALL_FAILURES


class DeliveryFailed(Failure):
    topic: ClassVar[str] = topics.DELIVERY_FAILURES


class PokemonReleased(Failure):
    """Pokeball's compensation: the Pokémon was released and the ball refunded."""

    topic: ClassVar[str] = topics.POKEBALL_FAILURES


class PokemonHealed(Failure):
    """Combat's compensation: the hp taken was restored."""

    topic: ClassVar[str] = topics.COMBAT_FAILURES


class CaptureFailed(Failure):
    """The failure outcome: every step that ran has been undone."""

    topic: ClassVar[str] = topics.OUTCOMES
    former_topics: ClassVar[tuple[str, ...]] = ()  # always an outcome


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        PokemonEncountered,
        PokemonParalyzed,
        PokemonWeakened,
        PokemonCaught,
        PokemonDelivered,
        ParalysisFailed,
        PokemonFainted,
        PokemonBrokeFree,
        OutOfPokeballs,
        DeliveryFailed,
        PokemonReleased,
        PokemonHealed,
        CaptureFailed,
    )
}
OUTCOME_TYPES = frozenset({"PokemonDelivered", "CaptureFailed"})
