"""What the services' SQLite databases hold after a bench: rows and bytes per table.

Bytes are the pages a table and its indexes occupy (SQLite's ``dbstat``), so a table's
figure includes what its indexes cost. ``per_100k`` scales both to 100,000 sagas.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

# The runtime's own tables: what deduplication, publication and parking cost beside the business rows.
RUNTIME = ("inbox", "outbox", "positions", "parked", "rebuild", "alembic_version", "pokesaga_engine_version")


def tables(path: Path) -> dict[str, dict[str, int]]:
    """{table: {"rows": n, "bytes": b}} of one SQLite file (its indexes counted with their table)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        owners = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        figures: dict[str, dict[str, int]] = {}
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owners.get(name, name)
            if table.startswith("sqlite_"):
                continue
            figures.setdefault(table, {"rows": 0, "bytes": 0})["bytes"] += int(size)
        for table in figures:
            figures[table]["rows"] = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        return figures
    finally:
        conn.close()


def measure(data: Path, services: tuple[str, ...], sagas: int) -> dict[str, Any]:
    """Rows and bytes per table of each service's database under ``data``, and totals per 100k sagas:
    the runtime's tables (``runtime``) apart from the services' own (``business``)."""
    found: dict[str, dict[str, dict[str, int]]] = {}
    for service in services:
        path = data / f"{service}.db"
        if path.exists():
            found[service] = tables(path)
    totals = {"runtime": {"rows": 0, "bytes": 0}, "business": {"rows": 0, "bytes": 0}}
    for figures in found.values():
        for table, counted in figures.items():
            kind = "runtime" if table in RUNTIME else "business"
            totals[kind]["rows"] += counted["rows"]
            totals[kind]["bytes"] += counted["bytes"]
    scale = 100_000 / sagas if sagas else 0.0
    per_100k = {kind: {k: round(v * scale) for k, v in counted.items()} for kind, counted in totals.items()}
    return {"sagas": sagas, "tables": found, "per_100k": per_100k}
