"""The choreography, drawn from the saga's declaration: a Mermaid diagram and an AsyncAPI 3.0 document.

Nothing here names a step, a topic or an event: both documents derive from ``CAPTURE`` (the
steps in order, what each consumes and publishes, the compensations in the order they unwind,
the outcomes) and from the models' JSON Schemas. ``pokesaga docs`` writes them to ``docs/``; a
test fails when the checked-in files drift from the declaration.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from capture.saga import CAPTURE
from contracts import jsonschema
from engine.saga import Saga
from engine.wire.deadletter import dead_letters
from engine.wire.envelope import Envelope

DOCS_DIR = Path(__file__).parents[1] / "docs"
DIAGRAM = "choreography.mmd"
ASYNCAPI = "asyncapi.json"

# A node of the diagram: (kind, name). Kinds: start, topic, step, compensation, outcome.
Node = tuple[str, str]
START: Node = ("start", "start")
OUTCOME: Node = ("outcome", "outcome")
CLIENT = "client"  # who starts a saga and waits for its outcome, in the AsyncAPI document


def edges(saga: Saga = CAPTURE) -> list[tuple[Node, str, Node]]:
    """Every hop of the choreography as (from, event type, to), in the order of the declaration:
    the start event, each step (what it handles, what it publishes), each compensator in the
    order they unwind, the outcomes."""
    sends = saga.published
    hops: list[tuple[Node, str, Node]] = [(START, saga.start.__name__, ("topic", saga.start.topic))]
    parties: list[tuple[str, str]] = [("step", step.name) for step in saga.steps]
    parties += [("compensation", comp.name) for comp in saga.compensations]
    for kind, name in parties:
        node = (kind, name)
        hops += [(("topic", saga.types[t].topic), t, node) for t in saga.participants[name].handlers]
        hops += [(node, cls.__name__, ("topic", cls.topic)) for cls in sends[name]]
    hops += [(("topic", cls.topic), cls.__name__, OUTCOME) for cls in saga.outcomes]
    for kind, name in parties:  # where a release before this one published them: still read
        handlers = saga.participants[name].handlers
        hops += [(("topic", f), t, (kind, name)) for t in handlers for f in saga.types[t].former_topics]
    return hops


def former(saga: Saga) -> set[str]:
    """The topics no event goes to any more, read for what earlier releases wrote there."""
    return {t for cls in saga.events for t in cls.former_topics} - {cls.topic for cls in saga.events}


def grouped(hops: Iterable[tuple[Node, str, Node]]) -> dict[tuple[Node, Node], list[str]]:
    """(from, to) → the event types on that arrow, in order of first appearance."""
    arrows: dict[tuple[Node, Node], list[str]] = {}
    for source, type_, target in hops:
        arrows.setdefault((source, target), []).append(type_)
    return arrows


_PREFIX = {"start": "saga_", "topic": "t_", "step": "s_", "compensation": "c_", "outcome": "saga_"}
_SHAPE = {
    "start": '(("{}"))',
    "topic": '(["{}"])',
    "step": '["{}"]',
    "compensation": '("{}")',
    "outcome": '(("{}"))',
}
_STYLE = {
    "topic": "fill:#eef3fb,stroke:#5b7db1",
    "step": "fill:#eaf7ea,stroke:#4c9a4c",
    "compensation": "fill:#fbeeee,stroke:#b15b5b",
}


def node_id(node: Node) -> str:
    kind, name = node
    return _PREFIX[kind] + re.sub(r"\W", "_", name)


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid(saga: Saga = CAPTURE) -> str:
    """The choreography as a Mermaid flowchart: topics, participants, arrows named by event type."""
    nodes: list[Node] = [START, *(("topic", t) for t in saga.topics)]
    nodes += [("step", step.name) for step in saga.steps]
    nodes += [("compensation", comp.name) for comp in saga.compensations]
    nodes.append(OUTCOME)
    ids = [node_id(n) for n in nodes]
    if len(set(ids)) != len(ids):
        raise ValueError(f"two nodes of saga {saga.name} get the same diagram id: {sorted(ids)}")
    lines = [
        "flowchart TB",  # top to bottom: the forward path reads down the page, the unwinding below it
        f"    %% The {saga.name} saga, drawn from its declaration by `pokesaga docs`: do not edit.",
    ]
    lines += [f"    {node_id(n)}{_SHAPE[n[0]].format(_label(n[1]))}" for n in nodes]
    old = {("topic", t) for t in former(saga)}
    for (source, target), types in grouped(edges(saga)).items():
        arrow = "-.->" if source in old else "-->"  # dotted: what an earlier release wrote, still read
        lines.append(f'    {node_id(source)} {arrow}|"{_label(", ".join(types))}"| {node_id(target)}')
    for kind, style in _STYLE.items():
        lines.append(f"    classDef {kind} {style}")
    for kind in _STYLE:
        lines.append(f"    class {','.join(node_id(n) for n in nodes if n[0] == kind)} {kind}")
    return "\n".join(lines) + "\n"


# -- AsyncAPI --------------------------------------------------------------------------------

SCHEMA_REF = "#/components/schemas/{model}"


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)}


def _schemas(saga: Saga) -> dict[str, Any]:
    """The envelope and every event's JSON Schema (the ones exported to contracts/schemas/),
    with their shared definitions (Pokemon, Trainer…) hoisted into the components."""
    schemas: dict[str, Any] = {}

    def put(name: str, schema: Any) -> None:
        if schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas named {name!r} in saga {saga.name}")

    models: dict[str, type[BaseModel]] = {"Envelope": Envelope, **saga.types}
    for name, model in models.items():
        schema = model.model_json_schema(ref_template=SCHEMA_REF)
        for def_name, definition in schema.pop("$defs", {}).items():
            put(def_name, definition)
        put(name, schema)
    return schemas


def _summary(cls: type) -> str | None:
    doc = cls.__dict__.get("__doc__")
    return doc.strip().splitlines()[0] if doc else None


def asyncapi(saga: Saga = CAPTURE) -> dict[str, Any]:
    """An AsyncAPI 3.0.0 document: a channel per topic, a message per event type (a CloudEvents
    envelope whose ``data`` is the event), a receive and send operations per participant."""
    sends = saga.published
    handlers = {name: list(p.handlers) for name, p in saga.participants.items()}
    senders: dict[str, list[str]] = {}
    receivers: dict[str, list[str]] = {t: [] for t in saga.types}
    senders[saga.start.__name__] = [f"{CLIENT} (the start event)"]
    for name, classes in sends.items():
        for cls in classes:
            senders.setdefault(cls.__name__, []).append(name)
    for name, types in handlers.items():
        for t in types:
            receivers[t].append(name)
    for cls in saga.outcomes:
        receivers[cls.__name__].append(f"{CLIENT} (an outcome)")

    messages: dict[str, Any] = {}
    for name, cls in saga.types.items():
        message: dict[str, Any] = {
            "name": name,
            "title": name,
            "description": (
                f"On `{cls.topic}`. Sent by {', '.join(senders.get(name, ['nobody']))};"
                f" received by {', '.join(receivers[name]) or 'nobody'}."
            ),
            "payload": {
                "allOf": [
                    _ref("components", "schemas", "Envelope"),
                    {
                        "type": "object",
                        "required": ["type", "data"],
                        "properties": {
                            "type": {"const": name},
                            "dataversion": {"const": cls.dataversion},
                            "data": _ref("components", "schemas", name),
                        },
                    },
                ]
            },
        }
        summary = _summary(cls)
        if summary:
            message["summary"] = summary
        messages[name] = message

    channels: dict[str, Any] = {}
    gone = former(saga)
    for topic in saga.topics:
        on_topic = [t for t, cls in saga.types.items() if cls.belongs_on(topic)]
        consumed = f"; its dead letters go to `{dead_letters(topic)}`" if topic in saga.consumed else ""
        was = " Where an earlier release published these events: read, no longer written." if topic in gone else ""
        channels[topic] = {
            "address": topic,
            "title": topic,
            "description": f"Kafka topic `{topic}`, keyed by saga id{consumed}.{was}",
            "messages": {t: _ref("components", "messages", t) for t in on_topic},
        }

    operations: dict[str, Any] = {}

    def operation(party: str, action: str, types: list[str], summary: str) -> None:
        by_topic: dict[str, list[str]] = {}
        for t in types:  # received also where an earlier release sent it
            for topic in saga.types[t].read_from() if action == "receive" else (saga.types[t].topic,):
                by_topic.setdefault(topic, []).append(t)
        for topic, on_topic in by_topic.items():
            key = f"{party}.{action}.{topic}"
            if key in operations:
                raise ValueError(f"two operations named {key!r} in saga {saga.name}")
            operations[key] = {
                "action": action,
                "channel": _ref("channels", topic),
                "summary": summary,
                "messages": [_ref("channels", topic, "messages", t) for t in on_topic],
            }

    operation(CLIENT, "send", [saga.start.__name__], "Any client starts a saga.")
    for name in saga.participants:
        kind = "step" if name in {step.name for step in saga.steps} else "compensator"
        operation(name, "receive", handlers[name], f"The {kind} {name} handles these events.")
        operation(name, "send", [cls.__name__ for cls in sends[name]], f"The {kind} {name} publishes these events.")
    operation(CLIENT, "receive", [cls.__name__ for cls in saga.outcomes], "Every saga ends with one of these.")

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": saga.name,
            "version": str(max(cls.dataversion for cls in saga.types.values())),
            "description": (
                f"The {saga.name} saga's choreography, generated from its declaration by `pokesaga docs`:"
                " do not edit. Every topic is a channel, every event type a message. A message is a"
                " structured-mode CloudEvents 1.0 JSON document whose `type` is the event type and whose"
                " `data` is the event; the Kafka record key is the saga id. Each participant (a step, or a"
                " compensator) receives the events it handles and sends the events it publishes."
                " Each message's `dataversion` is its event's current version; the document's is the highest."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _schemas(saga), "messages": messages},
    }


def render(saga: Saga = CAPTURE) -> dict[str, str]:
    """File name → text of every document, deterministic."""
    return {
        DIAGRAM: mermaid(saga),
        ASYNCAPI: json.dumps(asyncapi(saga), indent=2, sort_keys=True) + "\n",
    }


def export(directory: Path = DOCS_DIR) -> list[Path]:
    return jsonschema.write(directory, render())
