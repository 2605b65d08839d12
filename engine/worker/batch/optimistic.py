"""The optimistic pass: no savepoints, every write held to the end, one statement per table.

The handlers get a connection that holds their single-row inserts (engine.worker.batch.held);
the batch's inbox, parked and outbox rows are written together when the pass ends. Any error
that is a record's (the handler's, or a held insert's, whose record is not known) rolls the
whole pass back with ``Careful``: the ladder then applies the batch carefully.
"""

from __future__ import annotations

from sqlalchemy import Connection

from engine.worker.batch.context import Context
from engine.worker.batch.errors import Careful, is_unavailable
from engine.worker.batch.fates import Item
from engine.worker.batch.held import DeferredFailed, DeferredInserts
from engine.worker.batch.passes import Pass, Rows


class OptimisticPass(Pass):
    """Fast: raises ``Careful`` (all rolled back) when an error is a record's."""

    def __init__(self, ctx: Context, conn: Connection) -> None:
        self.held = DeferredInserts(conn)
        super().__init__(ctx, conn, self.held)
        self.inbox: Rows = []
        self.parked: Rows = []
        self.outbox: Rows = []

    def apply(self, item: Item) -> None:
        envelope, event = item.envelope, item.event
        assert envelope is not None and event is not None
        with self.span(item) as context:
            try:
                produced = self.decide(item, self.once)
                rows = self.rows(envelope, produced, context())
            except DeferredFailed as held:  # an earlier record's insert, sent now: whose is not known
                if is_unavailable(held.error):
                    raise held.error from None
                raise Careful(None, held.error) from None
            except Exception as exc:  # Rejected too: what the handler wrote must roll back with it
                if is_unavailable(exc):
                    raise
                raise Careful(envelope.id, exc) from None
        self.write([self.inbox_row(envelope)], None, rows)
        self.applied(envelope, event, produced)

    def write(self, inbox_rows: Rows, parked_rows: Rows | None = None, outbox_rows: Rows | None = None) -> None:
        self.inbox += inbox_rows
        self.parked += parked_rows or []
        self.outbox += outbox_rows or []

    def finish(self) -> None:
        """The handlers' held inserts, then every inbox, parked and outbox row of the batch, one
        statement per table."""
        ctx = self.ctx
        try:
            self.held.flush()
            ctx.inbox.insert(self.conn, self.inbox)
            ctx.parked.insert(self.conn, self.parked)
            self.result.outbox += ctx.outbox.insert(self.conn, self.outbox)
        except Exception as exc:
            error = exc.error if isinstance(exc, DeferredFailed) else exc
            if is_unavailable(error):
                raise error from None
            raise Careful(None, error) from None
