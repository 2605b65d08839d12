"""Read-only views of each service's local state, for ``pokesaga inspect``.

Each service answers from its own database only; a service whose database does not
exist yet answers ``null``. Output is deterministic (sorted), so two views can be diffed.

A saga's view also lists the records of the saga each service holds parked (``parked``, see
engine.cli.inspection): a step being retried, attempt n of m, and the records queued behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from engine.cli.inspection import maximum_attempts_of, parked, parked_lines, read
from services.combat.tables import CombatRecords
from services.delivery.tables import DeliveryRecords
from services.pokeball.tables import PokeballRecords
from services.status.tables import StatusRecords


def _trainer_queries(name: str) -> dict[str, Callable[[Connection], Any]]:
    def pokeball(conn: Connection) -> dict[str, Any]:
        records = PokeballRecords(conn)
        return {"balls": records.balls(name), "throws": records.for_trainer(name)}

    def delivery(conn: Connection) -> dict[str, Any]:
        rows = DeliveryRecords(conn).for_trainer(name)
        return {
            "party": [r for r in rows if r["location"] == "party"],
            "pc": [r for r in rows if r["location"] == "pc"],
            "undelivered": [r for r in rows if r["location"] is None],
        }

    return {
        "status": lambda conn: {"sagas": StatusRecords(conn).for_trainer(name)},
        "combat": lambda conn: {"attacks": CombatRecords(conn).for_trainer(name)},
        "pokeball": pokeball,
        "delivery": delivery,
    }


def trainer(settings: Settings, name: str, services: tuple[str, ...] = SERVICES) -> dict[str, Any]:
    """What each service knows of trainer ``name``."""
    queries = _trainer_queries(name)
    return {"trainer": name, **{s: read(settings, s, queries[s]) for s in services}}


def saga(settings: Settings, saga_id: str, services: tuple[str, ...] = SERVICES) -> dict[str, Any]:
    """What each service recorded for saga ``saga_id`` (null where its step never ran), and the
    saga's records each holds parked, in arrival order per service (``parked``: a list, each with
    its ``service``; the maximum attempts are those of ``settings``' retry policies)."""
    queries: dict[str, Callable[[Connection], Any]] = {
        "status": lambda conn: StatusRecords(conn).get(saga_id),
        "combat": lambda conn: CombatRecords(conn).get(saga_id),
        "pokeball": lambda conn: PokeballRecords(conn).get_throw(saga_id),
        "delivery": lambda conn: DeliveryRecords(conn).get(saga_id),
    }

    maximum_attempts = maximum_attempts_of(CAPTURE, settings)

    def of(service: str) -> tuple[Any, list[dict[str, Any]]]:
        def both(conn: Connection) -> tuple[Any, list[dict[str, Any]]]:
            return queries[service](conn), parked(conn, saga_id, maximum_attempts)

        return read(settings, service, both) or (None, [])

    found = {s: of(s) for s in services}
    held = [{"service": s, **p} for s in services for p in found[s][1]]
    return {"saga": saga_id, **{s: found[s][0] for s in services}, "parked": held}


def render_trainer(view: dict[str, Any]) -> str:
    """A short human summary of a trainer view."""
    lines = [f"trainer {view['trainer']}"]
    pokeball, delivery = view.get("pokeball"), view.get("delivery")
    lines.append(f"  balls in bag: {pokeball['balls'] if pokeball and pokeball['balls'] is not None else '-'}")
    for place in ("party", "pc"):
        members = (delivery or {}).get(place, [])
        listed = ", ".join(f"{m['slot']}:{m['pokemon']} L{m['level']}" for m in members) or "empty"
        lines.append(f"  {place}: {listed}")
    throws = (pokeball or {}).get("throws", [])
    lines.append(
        f"  throws: {len([t for t in throws if t['ball']])} ({sum(t['outcome'] == 'caught' for t in throws)} caught)"
    )
    return "\n".join(lines)


def render_saga(view: dict[str, Any]) -> str:
    lines = [f"saga {view['saga']}"]
    for service in SERVICES:
        row = view.get(service)
        if row is None:
            lines.append(f"  {service:<9} -")
            continue
        shown = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("saga_id", "trainer"))
        lines.append(f"  {service:<9} {shown}")
    lines += parked_lines(view.get("parked") or [])
    return "\n".join(lines)
