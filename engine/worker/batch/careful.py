"""The careful pass: each record in a savepoint, under the retry policy.

A record's error is that record's alone: its savepoint rolls back, and it is parked to be tried
again when the policy says, or takes its failure path (engine.worker.batch.failure). The rest of
the batch is applied. Only the database being unavailable rolls the whole pass back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from engine.events import Event
from engine.participant import Rejected, UnitOfWork
from engine.wire.envelope import Envelope
from engine.worker.batch import failure
from engine.worker.batch.context import Context
from engine.worker.batch.errors import GaveUp, is_unavailable
from engine.worker.batch.fates import Item
from engine.worker.batch.passes import Pass, Rows


class CarefulPass(Pass):
    """Record by record; ``failed``: errors of the optimistic pass by event id (attempts made)."""

    def __init__(self, ctx: Context, conn: Connection, failed: dict[str, Exception]) -> None:
        super().__init__(ctx, conn, conn)
        self.failed = failed

    def apply(self, item: Item) -> None:
        envelope, event = item.envelope, item.event
        assert envelope is not None and event is not None
        with self.span(item) as context:
            try:
                with self.conn.begin_nested():
                    produced = self.decide(item, self.attempt)
                    self.insert([self.inbox_row(envelope)], [], self.rows(envelope, produced, context()))
            except Rejected as rejected:
                self.dead_letter(item, rejected.reason)
                return
            except Exception as exc:
                if is_unavailable(exc):
                    raise
                gave_up = exc if isinstance(exc, GaveUp) else failure.retry_later(self, item, exc, context())
                if gave_up is not None:
                    failure.fail(self, item, gave_up, context())
                return
        self.applied(envelope, event, produced)

    def attempt(self, envelope: Envelope, event: Event, uow: UnitOfWork[Any]) -> Sequence[Event]:
        """One try of the handler, in a savepoint; the optimistic pass's try stands for it if it
        failed there (it is not run twice for one attempt)."""
        prior = self.failed.pop(envelope.id, None)
        if prior is not None:
            raise prior
        with self.conn.begin_nested():
            return self.once(envelope, event, uow)

    def write(self, inbox_rows: Rows, parked_rows: Rows | None = None, outbox_rows: Rows | None = None) -> None:
        with self.conn.begin_nested():
            self.insert(inbox_rows, parked_rows or [], outbox_rows or [])

    def finish(self) -> None:
        """Each record was written in its savepoint: nothing is held."""

    def insert(self, inbox_rows: Rows, parked_rows: Rows, outbox_rows: Rows) -> None:
        """The rows, now, in the transaction (or savepoint) open."""
        ctx = self.ctx
        ctx.inbox.insert(self.conn, inbox_rows)
        ctx.parked.insert(self.conn, parked_rows)
        self.result.outbox += ctx.outbox.insert(self.conn, outbox_rows)
