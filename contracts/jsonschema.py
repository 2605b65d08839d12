"""Export the JSON Schemas of the envelope and every event to ``contracts/schemas/``.

A client that never saw this code validates a hand-written start event against
``PokemonEncountered.json`` (its ``data``) and ``envelope.json``. A test fails when the
checked-in files drift from the models: run ``pokesaga schemas export`` after a change.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from contracts.events import EVENT_TYPES
from engine.wire.envelope import Envelope

SCHEMA_DIR = Path(__file__).with_name("schemas")
RELEASED_DIR = SCHEMA_DIR / "released"  # one file per event and version: `pokesaga schemas check`


def render() -> dict[str, str]:
    """File name → JSON text of every schema, deterministic."""
    models: dict[str, type[BaseModel]] = {"envelope": Envelope, **EVENT_TYPES}
    return {
        f"{name}.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in models.items()
    }


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    return write(directory, render())


def write(directory: Path, files: dict[str, str]) -> list[Path]:
    """Write each rendered file (name → text) into ``directory``; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
