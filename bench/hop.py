"""The local transaction of each hop alone: CPU per saga in the four services, no broker.

    python -m bench.hop [--sagas 5000] [--batch 200] [--rounds 3] [--data-dir DIR]

Each round: new SQLite databases for the four services; ``--sagas`` start events applied by
status in batches of ``--batch`` (the loop's own ``apply``, then its outbox rows marked sent as the
loop does), what it published handed to combat the same way, and so on to the outcome. Prints,
per service and in all, the CPU µs a saga spent (``time.process_time``), and checks every saga
reached its outcome. What the broker costs is not here: ``pokesaga bench`` measures the whole.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import EASY
from capture.bootstrap import PARTICIPANTS, engine_for
from capture.saga import CAPTURE
from capture.settings import Settings
from capture.starter import start_event
from contracts import topics
from engine.store.outbox import OutboxRow
from engine.worker.batch.processor import BatchProcessor

CHAIN = (("status", topics.STATUS), ("combat", topics.COMBAT), ("pokeball", topics.POKEBALL),
         ("delivery", topics.DELIVERY))  # fmt: skip


@dataclass
class HopRecord:
    """A record as the loop would hand it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))
    headers: Sequence[tuple[str, bytes | None]] = ()


def records(rows: Sequence[OutboxRow], topic: str, first_offset: int) -> list[HopRecord]:
    return [
        HopRecord(row.topic, 0, first_offset + n, row.key, row.value, headers=[(k, v.encode()) for k, v in row.headers])
        for n, row in enumerate(r for r in rows if r.topic == topic)
    ]


async def one_round(sagas: int, batch: int, data: Path) -> dict[str, float]:
    settings = Settings(data_dir=data, starter_balls=10)
    cpu: dict[str, float] = {}
    start = [start_event(f"hop-{i}", {"name": f"hop-{i}"}, EASY, source="pokesaga/hopbench") for i in range(sagas)]
    rows = [OutboxRow(0, topics.STATUS, e.sagaid.encode(), e.to_json(), [("ce_type", e.type)], e.type) for e in start]
    for service, topic in CHAIN:
        processor = BatchProcessor(PARTICIPANTS[service], CAPTURE.types, engine_for(service, settings), settings)
        todo, published = records(rows, topic, 0), []
        began = time.process_time()
        for at in range(0, len(todo), batch):
            result = await processor.apply(todo[at : at + batch])
            processor.sent(result.outbox)  # deleted by the next batch's transaction, as in the loop
            published += result.outbox
        cpu[service] = (time.process_time() - began) / sagas * 1e6
        processor.engine.dispose()
        rows = published
    outcomes = [r for r in rows if r.topic == topics.OUTCOMES]
    assert len(outcomes) == sagas, f"{len(outcomes)} outcomes of {sagas}"
    cpu["saga"] = sum(cpu.values())
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sagas", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=200, help="records per batch (1: a hop at a time)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None, help="where the SQLite files go (default: a temp dir)")
    args = parser.parse_args()
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=args.data_dir) as data:
            cpu = asyncio.run(one_round(args.sagas, args.batch, Path(data)))
        print("CPU µs a saga: " + ", ".join(f"{k} {v:,.0f}" for k, v in cpu.items()), flush=True)


if __name__ == "__main__":
    main()
