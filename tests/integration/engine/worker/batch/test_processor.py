"""The batch ladder (engine.worker.batch.processor), its last rung: a record that cannot be applied
even alone is dead-lettered in a transaction of its own, through the outbox."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.wire.deadletter import REASON_HEADER, dead_letters
from tests.toy.events import SECOND
from tests.toy.handlers import do_second
from tests.toy.kit import FAST, Rec, applied, first_done, flaky, processor_for
from tests.toy.saga import Settings


class Indescribable(Exception):
    """An error that fails again when anyone tries to say what it is: the careful pass breaks on it."""

    def __str__(self) -> str:
        raise RuntimeError("cannot even describe this")


async def test_a_parked_record_that_breaks_the_careful_pass_is_dead_lettered_through_the_outbox_and_leaves_the_parked(
    settings: Settings,
) -> None:
    """The last rung of the ladder: a record that cannot be applied even alone gets its dead letter
    written to the outbox (so a crash before it is published loses nothing), in the transaction
    that takes it out of the parked records; the record behind it in its saga becomes the head."""
    settings = settings.model_copy(update={"retry": FAST})
    first = processor_for("second", settings, FirstDone=flaky(1, then=do_second))
    assert (await applied(first, [Rec(first_done("broken-1", name="Bro").to_json())])).parked == 1

    def breaks(event: Any, uow: Any) -> Any:
        raise Indescribable()

    broken = processor_for("second", settings, FirstDone=breaks)
    deadline = time.monotonic() + 30
    records: Sequence[Any] = []
    while not records:
        assert time.monotonic() < deadline, "the parked record never fell due"
        records, _ = broken.parked_records(10)
    result = await applied(broken, records)
    (row,) = result.outbox
    assert row.id != 0 and row.topic == dead_letters(SECOND)
    assert dict(row.headers)[REASON_HEADER].startswith("internal_error: RuntimeError: cannot even describe this")
    assert row.id in [r.id for r in broken.pending()]  # in the outbox until published
    assert broken.parked.count(broken.engine) == 0
