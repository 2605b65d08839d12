"""How long a participant takes to apply a backlog of parked records (what queued during a rebuild).

    python -m bench.drain 10000 100000 [--data-dir DIR]

For each count: a new pokeball database on SQLite, that many records parked (one saga each, as a
rebuild parks what queued), then the loop's own calls until none is left — ``parked_records``
(what is due, up to a batch) and ``process`` (applied in one transaction, the rows deleted).
Prints the drain time, the records per second, and the slowest single read of what is due: a
read that scans every parked row makes the drain cost the square of the backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from capture.bootstrap import PARTICIPANTS, engine_for
from capture.saga import CAPTURE
from capture.settings import Settings
from contracts import topics
from contracts.events import PokemonWeakened
from engine.store.parked import REBUILDING
from engine.wire.envelope import wrap
from engine.worker.batch.processor import BatchProcessor

WEAKENED = {
    "trainer": {"name": "Drain"},
    "pokemon": {"name": "Caterpie", "hp": 5, "max_hp": 60, "status": "PARALYZED"},
    "hp_before": 20,
    "damage": 15,
}


@dataclass
class _Record:
    """A record of the pokeball topic, as the loop would hand it over."""

    offset: int
    value: bytes | None
    key: bytes | None
    topic: str = topics.POKEBALL
    partition: int = 0
    timestamp: int = 0
    headers: Sequence[tuple[str, bytes | None]] = ()


def park(processor: BatchProcessor, count: int, chunk: int = 5_000) -> None:
    event = PokemonWeakened.model_validate(WEAKENED)
    for start in range(0, count, chunk):
        rows = []
        for n in range(start, min(count, start + chunk)):
            saga = f"drain-{n}"
            envelope = wrap(event.model_copy(update={"trainer": event.trainer.model_copy(update={"name": f"D{n}"})}),
                            saga_id=saga, source="drainbench", causation_id=f"cause-{saga}")  # fmt: skip
            rows.append(processor.parked.row(_Record(n, envelope.to_json(), saga.encode()), envelope, REBUILDING))
        with processor.engine.begin() as conn:
            processor.parked.insert(conn, rows)


async def drain(processor: BatchProcessor, batch: int) -> tuple[float, float, int]:
    """(seconds in all, slowest read of what is due, records applied)."""
    started, slowest, applied = time.perf_counter(), 0.0, 0
    while True:
        read = time.perf_counter()
        records, _ = processor.parked_records(batch)
        slowest = max(slowest, time.perf_counter() - read)
        if not records:
            return time.perf_counter() - started, slowest, applied
        applied += sum((await processor.apply(records)).applied.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", nargs="+", type=int, help="parked records to drain, one run each")
    parser.add_argument("--batch", type=int, default=500, help="records per transaction (POKESAGA_BATCH_SIZE)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the SQLite files go (default: a temp dir)")
    args = parser.parse_args()
    for count in args.counts:
        with tempfile.TemporaryDirectory(dir=args.data_dir) as data:
            settings = Settings(data_dir=Path(data), starter_balls=10)
            participant = PARTICIPANTS["pokeball"]
            processor = BatchProcessor(participant, CAPTURE.types, engine_for("pokeball", settings), settings)
            park(processor, count)
            seconds, slowest, applied = asyncio.run(drain(processor, args.batch))
            assert applied == count, f"{applied} of {count} applied"
            print(
                f"{count:>8,} parked: drained in {seconds:6.1f} s ({count / seconds:7,.0f} records/s); "
                f"slowest read of what is due {slowest * 1000:6.1f} ms",
                flush=True,
            )
            processor.engine.dispose()


if __name__ == "__main__":
    main()
