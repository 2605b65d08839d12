"""The loop's sensor: what a participant's loop reports, as hooks it calls at each step.

The loop says what happened (a batch fetched, applied, published; lag; parked records; a rebuild
on or off) and the sensor turns it into Prometheus metrics (engine.observe.metrics) and the one
log line an operator must see (a saga needing an operator). The loop itself reads as its steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from engine.observe import metrics
from engine.wire.text import printable, saga_option

log = logging.getLogger(__name__)


class _Published(Protocol):
    @property
    def type(self) -> str: ...


class _Result(Protocol):
    parked: int
    applied: dict[str, int]
    duplicates: int
    skipped: int
    dead_letters: list[str]
    retries: list[str]
    held: list[str]
    failures: list[str]
    compensations: list[bool]
    operator: dict[str, tuple[str, str]]


class LoopSensor:
    """Metrics and operator lines of one participant, by hook."""

    def __init__(self, name: str, compensator: bool) -> None:
        self.name = name
        if compensator:  # served at 0 from the start: an alert can watch it grow
            metrics.sagas_needing_operator.labels(name)

    def on_fetched(self, timestamps_ms: Iterable[int]) -> None:
        """A batch was fetched: how long each record waited since it was published."""
        now, histogram = time.time(), metrics.schedule_to_start.labels(self.name)
        for timestamp in timestamps_ms:
            histogram.observe(max(0.0, now - timestamp / 1000))

    def on_applied(self, result: _Result, seconds: float | None = None) -> None:
        """A batch (or parked records) applied and committed: what it did."""
        name = self.name
        if seconds is not None:
            metrics.batch_latency.labels(name).observe(seconds)
        if result.parked:
            metrics.parked.labels(name).inc(result.parked)
        for type_, count in result.applied.items():
            metrics.events_consumed.labels(name, type_).inc(count)
        metrics.duplicates.labels(name).inc(result.duplicates)
        metrics.skipped.labels(name).inc(result.skipped)
        for reason in result.dead_letters:
            metrics.dead_letters.labels(name, reason.split(":", 1)[0]).inc()
        for error in result.retries:
            metrics.retries.labels(name, error).inc()
        for type_ in result.held:
            metrics.held_newer.labels(name, type_).inc()
        for reason in result.failures:
            metrics.step_failures.labels(name, reason).inc()
        for undone in result.compensations:
            metrics.compensations.labels(name, "undone" if undone else "noop").inc()
        for saga_id, (reason, dlq) in result.operator.items():  # committed: the dead letter is in the outbox
            metrics.sagas_needing_operator.labels(name).inc()
            saga = printable(saga_id, 200)
            log.warning(
                "saga %s NEEDS AN OPERATOR: %s could not compensate (%s); once fixed: pokesaga dlq replay %s %s",
                saga, name, printable(reason, 500), dlq, saga_option(saga),
            )  # fmt: skip

    def on_published(self, rows: Sequence[_Published]) -> None:
        for row in rows:
            metrics.events_published.labels(self.name, row.type).inc()

    def on_lag(self, topic: str, partition: int, lag: int) -> None:
        metrics.consumer_lag.labels(self.name, topic, str(partition)).set(max(0, lag))

    def on_parked(self, count: int) -> None:
        metrics.parked.labels(self.name).set(count)

    def on_rebuilding(self, rebuilding: bool) -> None:
        metrics.rebuilding.labels(self.name).set(int(rebuilding))

    def on_outbox_backlog(self, rows: int) -> None:
        metrics.outbox_backlog.labels(self.name).set(rows)
