"""The capture saga, declared once: four services, their steps in order, the compensations.

Everything else derives from this: the events and what each compensator undoes (from the
handlers' annotations), the participants and their consumer groups, the topics created, what a
stuck saga waits on, the bench's null relay, ``pokesaga docs``.
"""

from __future__ import annotations

from compensations.combat import undo_attack
from compensations.pokeball import undo_throw
from compensations.status import undo_paralyze
from contracts.jsonschema import RELEASED_DIR
from engine.saga import Compensation, Saga, Service, Step
from services.combat import handlers as combat_step
from services.combat.tables import CombatRecords
from services.delivery import handlers as delivery_step
from services.delivery.tables import DeliveryRecords
from services.pokeball import handlers as pokeball_step
from services.pokeball.tables import PokeballRecords
from services.status import handlers as status_step
from services.status.tables import StatusRecords

status, combat = Service("status", StatusRecords), Service("combat", CombatRecords)
pokeball, delivery = Service("pokeball", PokeballRecords), Service("delivery", DeliveryRecords)

CAPTURE = Saga(
    name="pokesaga",
    steps=(
        Step(status, status_step.paralyze, give_up=status_step.give_up),
        Step(combat, combat_step.attack, give_up=combat_step.give_up),
        Step(pokeball, pokeball_step.throw_pokeball, give_up=pokeball_step.give_up),
        Step(delivery, delivery_step.deliver, give_up=delivery_step.give_up),
    ),
    compensations=(Compensation(pokeball, undo_throw), Compensation(combat, undo_attack),
                   Compensation(status, undo_paralyze)),
    schemas=RELEASED_DIR,
)  # fmt: skip
