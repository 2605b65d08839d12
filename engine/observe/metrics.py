"""Prometheus metrics, named after Temporal's well-known ones, with the ``pokesaga_`` prefix.

Served on ``/metrics`` by engine.observe.health."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

events_consumed = Counter(
    "pokesaga_events_consumed_total", "Records applied, by participant and event type", ["participant", "type"]
)
events_published = Counter(
    "pokesaga_events_published_total", "Records published from the outbox", ["participant", "type"]
)
duplicates = Counter("pokesaga_duplicates_total", "Records whose event id was already in the inbox", ["participant"])
skipped = Counter(
    "pokesaga_events_skipped_total", "Records of an event type the participant does not handle", ["participant"]
)
dead_letters = Counter("pokesaga_dead_letters_total", "Records sent to a dead-letter topic", ["participant", "kind"])
batch_latency = Histogram(
    "pokesaga_step_execution_latency_seconds",
    "Time to apply one batch in its local transaction",
    ["participant"],
    buckets=LATENCY_BUCKETS,
)
schedule_to_start = Histogram(
    "pokesaga_schedule_to_start_latency_seconds",
    "Time from an event's publication (record timestamp) to its consumption",
    ["participant"],
    buckets=LATENCY_BUCKETS,
)
retries = Counter("pokesaga_retries_total", "Handler attempts retried under the retry policy", ["participant", "error"])
held_newer = Counter(
    "pokesaga_held_newer_version_total",
    "Records held (parked, reason newer_version) because their event's version is newer than this instance "
    "reads; counted each time one is held again",
    ["participant", "type"],
)
step_failures = Counter(
    "pokesaga_step_failures_total", "Failure events a step published, by reason", ["participant", "reason"]
)
compensations = Counter(
    "pokesaga_compensations_total",
    "Compensations run: undone (something was undone) or noop (nothing to undo, chain passed on)",
    ["participant", "result"],
)
sagas_needing_operator = Counter(
    "pokesaga_sagas_needing_operator_total",
    "Sagas whose compensation was dead-lettered (compensation_failed): each waits for a person to fix it and replay",
    ["participant"],
)
consumer_lag = Gauge(
    "pokesaga_consumer_lag", "Records on a partition not yet consumed (high watermark − position)",
    ["participant", "topic", "partition"],
)  # fmt: skip
outbox_backlog = Gauge(
    "pokesaga_outbox_backlog", "Rows in the participant's outbox, whoever wrote them", ["participant"]
)
parked = Gauge(
    "pokesaga_parked_records", "Records held back in the participant's database, to apply later", ["participant"]
)
rebuilding = Gauge("pokesaga_rebuilding", "1 while the participant re-applies its recorded history", ["participant"])
