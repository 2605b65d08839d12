"""One pass of a batch, as one local transaction: what is decided, written and committed together.

In order: the database guard; the outbox rows published since the last transaction deleted
(marked sent: a crash before this commit publishes them again, and consumers drop the copy);
the parked records being applied locked and still due; the partitions' positions read, the
records read before known as duplicates; each record's fate (engine.worker.batch.fates); each
fate done by the pass; the pass's writes finished; the positions advanced; the parked records
applied leave the parked table, and the next of their sagas become heads. All of it commits, or none of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection

from engine.broker.topicids import Incarnations
from engine.store.outbox import OutboxRow
from engine.store.parked import WAITING, ParkedRecord
from engine.wire.deadletter import dead_letter_row
from engine.wire.record import Record
from engine.worker.batch import fates
from engine.worker.batch.context import Context
from engine.worker.batch.errors import is_unavailable
from engine.worker.batch.guard import DatabaseGuard
from engine.worker.batch.passes import Pass, log_dead_letter
from engine.worker.batch.result import BatchResult


def run(
    ctx: Context,
    guard: DatabaseGuard,
    topics: Incarnations,
    records: Sequence[Record],
    kind: Callable[[Context, Connection], Pass],
) -> BatchResult:
    """``records`` through one pass of ``kind``, committed; what it did."""
    unparked = [record.id for record in records if isinstance(record, ParkedRecord)]
    with ctx.engine.begin() as conn:
        guard.check(conn, ctx.rebuilding)
        sent = ctx.delete_sent(conn)
        if unparked:
            ctx.parked.lock(conn)  # one instance at a time applies the parked records
            due = ctx.parked.still_due(conn, unparked, time.time())
            records = [r for r in records if not isinstance(r, ParkedRecord) or r.id in due]
            unparked = [i for i in unparked if i in due]
        fresh = [r for r in records if not isinstance(r, ParkedRecord)]  # read from the broker
        known = ctx.inbox.positions(conn) if fresh else {}
        behind = fates.behind(fresh, known, topics)
        decoded = [fates.Item(r, fates.DUPLICATE) if id(r) in behind else fates.decode(ctx, r) for r in records]
        p = kind(ctx, conn)
        planned = fates.plan(ctx, conn, decoded)
        if not unparked and conn.dialect.name == "postgresql" and any(i.reason == WAITING for i in planned):
            # Parked behind a head another instance may be applying now: decide again under the
            # parked records' lock, so that instance's promotion of the next head sees this one.
            ctx.parked.lock(conn)
            planned = fates.plan(ctx, conn, decoded)
        for item in planned:
            p.do(item)
        p.finish()
        ctx.inbox.advance(conn, known, fresh, topics.ids)
        if unparked:
            gone = [r for r in records if isinstance(r, ParkedRecord) and r.id not in p.kept]
            ctx.parked.delete(conn, [r.id for r in gone])
            ctx.parked.promote(conn, [r.saga_id for r in gone], time.time())
    ctx.sent.difference_update(sent)
    return p.result


def dead_letter_alone(ctx: Context, record: Record, reason: str) -> BatchResult:
    """The last resort for a record that cannot be applied at all: its dead letter, in the outbox in
    a transaction of its own (a parked record leaves the parked table in it). If even that cannot
    be written, the dead letter is returned unwritten (id 0), for the loop to publish all the same."""
    log_dead_letter(ctx.name, record, reason)
    row = dead_letter_row(ctx.name, record, reason, ctx.settings.max_message_bytes)
    try:
        with ctx.engine.begin() as conn:
            written = ctx.outbox.insert(conn, [row])
            if isinstance(record, ParkedRecord):  # dead-lettered: it leaves the parked records
                ctx.parked.lock(conn)
                ctx.parked.delete(conn, [record.id])
                ctx.parked.promote(conn, [record.saga_id], time.time())
    except Exception as exc:
        if is_unavailable(exc):
            raise
        written = [OutboxRow(0, row["topic"], row["key"], row["value"], row["headers"], "dead_letter")]
    return BatchResult(outbox=written, dead_letters=[reason])
