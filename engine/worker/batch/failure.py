"""When a record's handler fails in the careful pass: try it again later, or give up.

A record that failed with a retryable error is **parked to be retried** (engine.store.parked:
attempts, next attempt at, last error; a retry notice for observers, engine.wire.notices), and
later records of its saga wait behind it; its offset is committed with the batch, and the
partition goes on. When its attempts run out, or its saga's deadline passes, it takes its
**failure path**: a forward step publishes its failure event; a compensation is dead-lettered
(``compensation_failed: …``) and its saga reported as needing an operator. A compensation is
tried at most ``compensation_attempts`` times, and only once when what it would publish fails
validation (the same data fails the same way every time). If the failure path itself fails,
the record is dead-lettered. Nothing a record carries can make a batch retry forever.
"""

from __future__ import annotations

import logging
import time

from pydantic import ValidationError

from engine.store.outbox import event_row
from engine.store.parked import RETRYING, ParkedRecord
from engine.wire import notices
from engine.worker.batch.errors import GaveUp, TooLarge, describe, gave_up, is_unavailable
from engine.worker.batch.fates import Item
from engine.worker.batch.passes import Pass

log = logging.getLogger(__name__)


def retry_later(p: Pass, item: Item, error: Exception, context: list[list[str]]) -> GaveUp | None:
    """Park ``item`` (or put its parked row off) to be tried again when the policy says, and say so
    on the retry notices' topic; None. A ``GaveUp`` when it is not to be tried again."""
    ctx, envelope = p.ctx, item.envelope
    assert envelope is not None
    attempts = (item.record.attempts if isinstance(item.record, ParkedRecord) else 0) + 1
    if isinstance(error, TooLarge):
        return gave_up(error, attempts)
    if ctx.participant.compensator and isinstance(error, ValidationError) and error.title in ctx.types:
        return gave_up(error, attempts)  # what it would publish is invalid: the same data fails the same way
    retryable = ctx.policy.retryable(error)
    delay = ctx.policy.delay_after(attempts) if retryable else None
    if delay is None:
        return gave_up(error, attempts, retryable)
    now = time.time()
    due_at = now + delay
    deadline = ctx.deadline(envelope)
    if deadline is not None:
        if deadline <= now:
            return GaveUp("deadline_exceeded", f"{describe(error)}; the saga's deadline passed")
        due_at = min(due_at, deadline)  # tried once more at the deadline, which then fails it
    described = describe(error)
    log.info("%s: %s on %s (saga %s), attempt %d; next at +%.2fs", ctx.name, described, envelope.id,
             envelope.sagaid, attempts, due_at - now)  # fmt: skip
    with p.conn.begin_nested():
        if isinstance(item.record, ParkedRecord):
            ctx.parked.retry_later(p.conn, item.record.id, attempts, due_at, described)
            p.kept.add(item.record.id)
        else:
            p.write([], [ctx.parked.row(item.record, envelope, RETRYING, attempts, due_at, described)])
            p.result.parked += 1
        if ctx.participant.retries_topic:
            notice = notices.notice(
                envelope, participant=ctx.name, source=ctx.participant.source, attempt=attempts,
                maximum_attempts=ctx.policy.maximum_attempts, next_attempt_at=due_at, error=described,
            )  # fmt: skip
            p.write([], [], [event_row(ctx.name, notice, ctx.participant.retries_topic, context)])
    p.blocked.add(envelope.sagaid)
    p.result.retries.append(type(error).__name__)
    p.result.next_due = min(p.result.next_due or due_at, due_at)
    return None


def fail(p: Pass, item: Item, given_up: GaveUp, context: list[list[str]]) -> None:
    """The record's failure path: a step's failure event, else (or if that fails) a dead letter."""
    ctx, envelope, event = p.ctx, item.envelope, item.event
    assert envelope is not None and event is not None
    on_exhausted = ctx.participant.on_exhausted
    recorded = ctx.recorded(envelope)
    if recorded:
        # Rebuilding, a recorded decision could not be applied again: publishing a new one
        # would give the saga a second outcome. The record waits for a person, loudly.
        published = ", ".join(e.type for e in recorded)
        log.error("%s: REBUILD CONFLICT for saga %s: it published %s before, and applying that again "
                  "failed (%s)", ctx.name, envelope.sagaid, published, given_up.detail)  # fmt: skip
        p.dead_letter(item, f"rebuild_conflict: {given_up.detail}")
        return
    if on_exhausted is None:  # a compensation: nothing to fall back on but a person
        p.needs_operator(item, f"compensation_failed: {given_up.detail}", given_up.attempts)
        return
    log.warning("%s: saga %s step failed (%s): %s", ctx.name, envelope.sagaid, given_up.reason, given_up.detail)
    try:
        with p.conn.begin_nested():  # the step's own record of the failure, beside its failure event
            failed = on_exhausted(event, p.unit_of_work(envelope), given_up.reason, given_up.detail)
            p.write([p.inbox_row(envelope)], [], p.rows(envelope, [failed], context))
    except Exception as exc:
        if is_unavailable(exc):
            raise
        p.dead_letter(item, f"failure_path_failed: {given_up.reason}, then {describe(exc)}")
        return
    p.applied(envelope, event, [failed])
