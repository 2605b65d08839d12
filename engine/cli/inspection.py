"""``inspect saga ID`` for any saga: what each service's database holds of it — the events each of its
participants applied (the inbox, the engine's table) and the records of the saga it holds parked.
Read-only: a SQLite file that does not exist is not created just to look at it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from engine.observe.retries import attempts_text, parked_records
from engine.saga import Saga
from engine.settings import Settings
from engine.store.db import INBOX, make_engine
from engine.wire.text import printable


def read(settings: Settings, service: str, query: Callable[[Connection], Any]) -> Any:
    """``query`` on ``service``'s database; None when it does not exist or has no tables yet."""
    url = settings.db_url(service)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return None  # never create a database just to look at it
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return query(conn)
    except DBAPIError:
        return None  # tables not created yet: the service has not run
    finally:
        engine.dispose()


def maximum_attempts_of(saga: Saga, settings: Settings) -> Callable[[str], int | None]:
    """A participant's maximum attempts under ``settings``' retry policies (None: one the saga does not declare)."""

    def maximum_attempts(consumer: str) -> int | None:
        participant = saga.participants.get(consumer)
        if participant is None:
            return None
        return settings.retry_policy(consumer, participant.compensator).maximum_attempts

    return maximum_attempts


def parked(conn: Connection, saga_id: str, maximum_attempts: Callable[[str], int | None]) -> list[dict[str, Any]]:
    """The saga's records parked in this database, in arrival order."""
    try:
        return parked_records(conn, saga_id, maximum_attempts)
    except DBAPIError:  # a database from before the parked table: nothing parked
        return []


def applied(conn: Connection, saga_id: str) -> list[dict[str, Any]]:
    """The events of the saga this database's participants applied, oldest first."""
    query = (
        select(INBOX.c.consumer, INBOX.c.type, INBOX.c.event_id, INBOX.c.received_at)
        .where(INBOX.c.saga_id == saga_id)
        .order_by(INBOX.c.received_at)
    )
    return [
        {
            "participant": printable(str(row.consumer), 100),
            "event_type": printable(str(row.type), 100),
            "event_id": printable(str(row.event_id), 200),
            "applied_at": datetime.fromtimestamp(row.received_at, UTC).isoformat(timespec="milliseconds"),
        }
        for row in conn.execute(query)
    ]


def saga(saga: Saga, settings: Settings, saga_id: str) -> dict[str, Any]:
    """Per service, the events of saga ``saga_id`` it applied (null where its database holds nothing yet),
    and the saga's records each holds parked (``parked``: a list, each with its ``service``)."""
    maximum_attempts = maximum_attempts_of(saga, settings)

    def both(conn: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return applied(conn, saga_id), parked(conn, saga_id, maximum_attempts)

    found: dict[str, tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]] = {
        s: read(settings, s, both) or (None, []) for s in saga.services
    }
    held = [{"service": s, **p} for s in saga.services for p in found[s][1]]
    return {"saga": saga_id, **{s: found[s][0] for s in saga.services}, "parked": held}


def render_saga(view: dict[str, Any]) -> str:
    lines = [printable(f"saga {view['saga']}")]
    services = [key for key in view if key not in ("saga", "parked")]
    width = max(map(len, services), default=0)
    for service in services:
        rows = view[service]
        shown = "; ".join(f"{r['participant']}: {r['event_type']}" for r in rows or ()) or "-"
        lines.append(f"  {service:<{width}}  {shown}")
    lines += parked_lines(view.get("parked") or [])
    return "\n".join(lines)


def parked_lines(parked: list[dict[str, Any]]) -> list[str]:
    """``  parked:`` and one line per parked record (none when nothing is parked)."""
    return ["  parked:", *(f"    {printable(parked_line(record))}" for record in parked)] if parked else []


def parked_line(record: dict[str, Any]) -> str:
    """``combat  PokemonParalyzed  retrying: attempt 3 of 5, next attempt at …, last error: …``."""
    head = f"{record['participant']}  {record['event_type'] or '?'}  {record['reason']}"
    if record["reason"] == "retrying":
        said = attempts_text(
            record["attempts"], record["maximum_attempts"], record["next_attempt_at"], record["last_error"]
        )
        return f"{head}: {said}"
    if record["reason"] == "waiting":
        return f"{head}: behind the record being retried"
    if record["reason"] == "newer_version":
        said = (record["last_error"] or "").removeprefix("newer_version: ") or "a version newer than it reads"
        return f"{head}: {said}; held for an upgraded instance"
    if record["reason"] == "rebuilding":
        return f"{head}: held until {record['participant']} has rebuilt its state"
    return head
