"""The choreography as a graph, from a saga's declaration: who publishes each event, on which
topic, and who acts on it. Pure: what a console draws and puts its live figures on.

Nodes: ``client`` (who starts a saga), every participant (the steps in order, then the
compensators in the order they unwind) and ``outcomes`` (where a saga ends). One edge per event
type, from the participant that publishes it to the one that handles it.
"""

from __future__ import annotations

from typing import Any

from engine.events import FailureEvent
from engine.saga import Saga

CLIENT, OUTCOMES = "client", "outcomes"


def graph(saga: Saga) -> dict[str, list[dict[str, Any]]]:
    """``{"nodes": [...], "edges": [...]}``; each node ``{"id", "kind", "topic", "group"}``, each
    edge ``{"event", "from", "to", "topic", "kind"}`` with kind start, success, failure,
    compensation or outcome."""
    steps = {step.name for step in saga.steps}
    nodes: list[dict[str, Any]] = [{"id": CLIENT, "kind": "client", "topic": None, "group": None}]
    for name, participant in saga.participants.items():
        kind = "step" if name in steps else "compensation"
        nodes.append({"id": name, "kind": kind, "topic": ", ".join(participant.topics), "group": name})
    outcome_topics = sorted({cls.topic for cls in saga.outcomes})
    nodes.append({"id": OUTCOMES, "kind": "outcome", "topic": ", ".join(outcome_topics), "group": None})

    publisher: dict[str, str] = {saga.start.__name__: CLIENT}
    for step in saga.steps:
        for cls in (*step.succeeds_with, *step.fails_with):
            publisher.setdefault(cls.__name__, step.name)
    for comp in saga.compensations:
        for cls in comp.publishes:
            publisher.setdefault(cls.__name__, comp.name)
    edges = []
    for name, cls in saga.types.items():
        target = saga.handled_by.get(name, OUTCOMES if name in saga.outcome_types else None)
        source = publisher.get(name)
        if source is None or target is None:
            continue  # an event no declared participant publishes, or no one acts on: no edge
        if name == saga.start.__name__:
            kind = "start"
        elif name in saga.outcome_types:
            kind = "outcome"
        elif source in steps:
            kind = "failure" if issubclass(cls, FailureEvent) else "success"
        else:
            kind = "compensation"
        edges.append({"event": name, "from": source, "to": target, "topic": cls.topic, "kind": kind})
    return {"nodes": nodes, "edges": edges}
