"""What one batch did: the rows to publish, and the counts the loop reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.store.outbox import OutboxRow


@dataclass
class BatchResult:
    """What one batch did; ``outbox`` is what must now be published, in order.

    A row with id 0 is in no outbox: a last-resort dead letter (the batch could not be written,
    not even the record's dead letter); it is published like the others."""

    outbox: list[OutboxRow] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    skipped: int = 0
    dead_letters: list[str] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)  # error type of each retry
    failures: list[str] = field(default_factory=list)  # reason of each step failure published
    compensations: list[bool] = field(default_factory=list)  # True: something undone; False: a no-op
    held: list[str] = field(default_factory=list)  # event type of each record held for a newer version
    parked: int = 0  # records newly parked (a parked record put off again is not counted twice)
    # Sagas whose compensation was dead-lettered: saga id -> (reason, the dead-letter topic)
    operator: dict[str, tuple[str, str]] = field(default_factory=dict)
    next_due: float | None = None  # when the earliest record parked to be retried by this batch is due

    def merge(self, other: BatchResult) -> None:
        """Add what ``other`` did (a later part of the same batch) to this result."""
        self.outbox += other.outbox
        for type_, count in other.applied.items():
            self.applied[type_] = self.applied.get(type_, 0) + count
        self.duplicates += other.duplicates
        self.skipped += other.skipped
        self.dead_letters += other.dead_letters
        self.retries += other.retries
        self.failures += other.failures
        self.compensations += other.compensations
        self.held += other.held
        self.parked += other.parked
        self.operator.update(other.operator)
        if other.next_due is not None:
            self.next_due = min(self.next_due or other.next_due, other.next_due)
