"""The capture saga, declared once: four services, their steps in order, the compensations.

Everything else derives from this: the participants and their consumer groups, the topics
created, what a stuck saga waits on, the bench's null relay, ``pokesaga docs``.
"""

from __future__ import annotations

from pathlib import Path

import compensations.combat
import compensations.pokeball
import compensations.status
import services.combat.handlers
import services.delivery.handlers
import services.pokeball.handlers
import services.status.handlers
from contracts import events, topics
from contracts.events import EVENT_TYPES
from engine.saga import Compensation, Saga, Service, Step
from services.combat.tables import CombatRecords
from services.combat.tables import metadata as combat_tables
from services.delivery.tables import DeliveryRecords
from services.delivery.tables import metadata as delivery_tables
from services.pokeball.tables import PokeballRecords
from services.pokeball.tables import metadata as pokeball_tables
from services.status.tables import StatusRecords
from services.status.tables import metadata as status_tables

SERVICES_DIR = Path(services.status.handlers.__file__).parents[1]

status = Service("status", status_tables, StatusRecords, SERVICES_DIR / "status" / "migrations")
combat = Service("combat", combat_tables, CombatRecords, SERVICES_DIR / "combat" / "migrations")
pokeball = Service("pokeball", pokeball_tables, PokeballRecords, SERVICES_DIR / "pokeball" / "migrations")
delivery = Service("delivery", delivery_tables, DeliveryRecords, SERVICES_DIR / "delivery" / "migrations")

CAPTURE = Saga(
    name="pokesaga",
    events=tuple(EVENT_TYPES.values()),
    steps=(
        Step(
            status, topics.STATUS, services.status.handlers.HANDLERS, services.status.handlers.give_up,
            succeeds_with=(events.PokemonParalyzed,), fails_with=(events.ParalysisFailed,),
        ),
        Step(
            combat, topics.COMBAT, services.combat.handlers.HANDLERS, services.combat.handlers.give_up,
            succeeds_with=(events.PokemonWeakened,), fails_with=(events.PokemonFainted,),
        ),
        Step(
            pokeball, topics.POKEBALL, services.pokeball.handlers.HANDLERS, services.pokeball.handlers.give_up,
            succeeds_with=(events.PokemonCaught,), fails_with=(events.PokemonBrokeFree, events.OutOfPokeballs),
        ),
        Step(
            delivery, topics.DELIVERY, services.delivery.handlers.HANDLERS, services.delivery.handlers.give_up,
            succeeds_with=(events.PokemonDelivered,), fails_with=(events.DeliveryFailed,),
        ),
    ),
    compensations=(  # in the order they unwind: newest step first
        Compensation(pokeball, compensations.pokeball.HANDLERS, publishes=(events.PokemonReleased,)),
        Compensation(combat, compensations.combat.HANDLERS, publishes=(events.PokemonHealed,)),
        Compensation(status, compensations.status.HANDLERS, publishes=(events.CaptureFailed,)),
    ),
    outcomes=(events.PokemonDelivered, events.CaptureFailed),
)  # fmt: skip
