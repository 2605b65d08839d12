"""What the timeline functions know of one saga: its declaration as a timeline reads it (event
types, outcomes and the state each ends in, compensating events, who handles what) and the fields
it shows from its start event. Every part of ``Timelines`` starts from this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.events import FailureEvent
from engine.saga import Saga

# The states a saga with no outcome is in when a dead letter decides it (see ``Timelines.state``).
REFUSED = "refused"
NEEDS_OPERATOR = "needs_operator"
COMPENSATION_FAILED = "compensation_failed"  # how a dead-lettered compensation's reason starts


class SagaShape:
    """One saga as its timelines see it, and the fields shown from its start event
    (``summary(data) -> {field: text or None}``)."""

    def __init__(
        self,
        saga: Saga,
        outcome_states: Mapping[str, str],
        summary: Callable[[dict[str, Any]], dict[str, str | None]],
        summary_fields: tuple[str, ...],
    ) -> None:
        if set(outcome_states) != saga.outcome_types:
            raise ValueError(f"outcome_states must name every outcome of {saga.name}: {sorted(saga.outcome_types)}")
        self.types = saga.types
        self.outcomes = dict(outcome_states)  # outcome event → the state it ends in
        self.compensating = saga.compensating_types
        self.states = tuple(
            dict.fromkeys(
                ("running", "retrying", "compensating", "stuck", REFUSED, NEEDS_OPERATOR, *self.outcomes.values())
            )
        )  # two outcomes may end in one state
        self.next = saga.handled_by  # who acts next after each event: what a saga stopped there waits on
        self.participants = tuple(saga.participants)  # a timeline keeps a notice of each, at most
        self.compensators = frozenset(c.name for c in saga.compensations)
        self.failed_outcomes = frozenset(n for n in saga.outcome_types if issubclass(saga.types[n], FailureEvent))
        self.consumed = frozenset(saga.consumed)  # whose dead-letter topics hold the saga's dead letters
        self.retries_topic = saga.retries_topic
        self.source_prefix = f"{saga.name}/"
        self.start = saga.start.__name__
        self.start_topic = saga.start.topic
        self.summary = summary
        self.summary_fields = summary_fields
