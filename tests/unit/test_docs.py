"""``pokesaga docs``: the choreography drawn from the declaration (Mermaid) and an AsyncAPI 3.0 document."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_asyncapi.v3 import AsyncAPI

from capture import docs
from capture.cli import main
from capture.saga import CAPTURE
from contracts import jsonschema
from tests.support import ROOT, doc_containing, doc_section

pytestmark = pytest.mark.no_database


# The compensation chains of DESIGN.md, written out by hand: failure → compensators, in order.
CHAINS = {
    "ParalysisFailed": ["status.compensations"],
    "PokemonFainted": ["status.compensations"],
    "PokemonBrokeFree": ["combat.compensations", "status.compensations"],
    "OutOfPokeballs": ["combat.compensations", "status.compensations"],
    "DeliveryFailed": ["pokeball.compensations", "combat.compensations", "status.compensations"],
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return docs.render()


@pytest.fixture(scope="module")
def arrows(rendered: dict[str, str]) -> set[tuple[str, str, str]]:
    """(from, event type, to) of every arrow the Mermaid text draws, by the nodes' labels."""
    return drawn(rendered, "-->") | drawn(rendered, "-.->")


@pytest.fixture(scope="module")
def dotted(rendered: dict[str, str]) -> set[tuple[str, str, str]]:
    """The dotted arrows: from a topic an earlier release wrote to, still read."""
    return drawn(rendered, "-.->")


def drawn(rendered: dict[str, str], arrow: str) -> set[tuple[str, str, str]]:
    text = rendered[docs.DIAGRAM]
    labels = dict(re.findall(r'^    (\w+)[(\[]+"([^"]+)"[)\]]+$', text, re.M))
    found = set()
    for source, types, target in re.findall(rf'^    (\w+) {re.escape(arrow)}\|"([^"]+)"\| (\w+)$', text, re.M):
        found |= {(labels[source], type_, labels[target]) for type_ in types.split(", ")}
    return found


@pytest.fixture(scope="module")
def document(rendered: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(rendered[docs.ASYNCAPI])
    return parsed


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} is not a local reference"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve ({part!r} missing)"
        node = node[part]
    if isinstance(node, dict) and set(node) == {"$ref"}:  # a reference to a reference
        return resolve(document, node["$ref"])
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [r for k, v in node.items() for r in ([v] if k == "$ref" else refs(v))]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_checked_in_docs_match_the_declaration(rendered: dict[str, str]) -> None:
    stale = [
        name
        for name, text in rendered.items()
        if not (docs.DOCS_DIR / name).exists() or (docs.DOCS_DIR / name).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"docs/ drifted from capture/saga.py ({stale}): run 'pokesaga docs'"


def test_the_docs_show_the_diagram_as_generated(rendered: dict[str, str]) -> None:
    block = f"```mermaid\n{rendered[docs.DIAGRAM]}```\n"
    shown = doc_containing("```mermaid\n")
    assert block in shown, "the mermaid block in docs/protocol.md drifted: paste docs/choreography.mmd"


def test_rendering_is_deterministic(rendered: dict[str, str]) -> None:
    assert docs.render() == rendered


def test_every_topic_participant_and_event_type_is_drawn(arrows: set[tuple[str, str, str]]) -> None:
    drawn_types = {type_ for _, type_, _ in arrows}
    nodes = {source for source, _, _ in arrows} | {target for _, _, target in arrows}
    assert drawn_types == set(CAPTURE.types)
    assert set(CAPTURE.topics) | set(CAPTURE.participants) | {"start", "outcome"} == nodes


def test_the_diagram_draws_exactly_the_declared_hops(arrows: set[tuple[str, str, str]]) -> None:
    assert arrows == {(source[1], type_, target[1]) for source, type_, target in docs.edges()}


def test_the_forward_path_runs_from_the_start_event_to_the_outcomes(arrows: set[tuple[str, str, str]]) -> None:
    forward = [
        ("start", "PokemonEncountered", "capture.status"),
        ("capture.status", "PokemonEncountered", "status"),
        ("status", "PokemonParalyzed", "capture.combat"),
        ("capture.combat", "PokemonParalyzed", "combat"),
        ("combat", "PokemonWeakened", "capture.pokeball"),
        ("capture.pokeball", "PokemonWeakened", "pokeball"),
        ("pokeball", "PokemonCaught", "capture.delivery"),
        ("capture.delivery", "PokemonCaught", "delivery"),
        ("delivery", "PokemonDelivered", "capture.outcomes"),
        ("capture.outcomes", "PokemonDelivered", "outcome"),
        ("capture.outcomes", "CaptureFailed", "outcome"),
    ]
    assert set(forward) <= arrows


def test_each_step_failure_goes_to_the_failures_topic_of_its_service(arrows: set[tuple[str, str, str]]) -> None:
    failed_by = {"ParalysisFailed": "status", "PokemonFainted": "combat", "PokemonBrokeFree": "pokeball"}
    failed_by |= {"OutOfPokeballs": "pokeball", "DeliveryFailed": "delivery"}
    for type_, step in failed_by.items():
        assert (step, type_, f"capture.failures.{step}") in arrows
        assert (step, type_, "capture.failures") not in arrows  # no one writes there any more


@pytest.mark.parametrize("failure", sorted(CHAINS))
def test_the_compensation_chain_unwinds_newest_step_first(
    failure: str, arrows: set[tuple[str, str, str]], dotted: set[tuple[str, str, str]]
) -> None:
    """Follow the arrows from a step's failure: each compensator that handles the event publishes
    the next one, until CaptureFailed reaches capture.outcomes. The same compensator reads it where
    an earlier release wrote it (capture.failures, dotted)."""
    visited, event = [], failure
    while event != "CaptureFailed":
        topic = CAPTURE.types[event].topic
        (handler,) = [to for source, type_, to in arrows - dotted if source == topic and type_ == event]
        assert ("capture.failures", event, handler) in dotted
        visited.append(handler)
        (event,) = [type_ for source, type_, _ in arrows if source == handler]
        assert len(visited) <= len(CAPTURE.compensations), f"no end to the chain from {failure}"
    assert visited == CHAINS[failure]
    assert (visited[-1], "CaptureFailed", "capture.outcomes") in arrows


def test_the_compensation_hops_of_the_design_are_drawn(arrows: set[tuple[str, str, str]]) -> None:
    assert ("capture.failures.delivery", "DeliveryFailed", "pokeball.compensations") in arrows
    assert ("pokeball.compensations", "PokemonReleased", "capture.failures.pokeball") in arrows
    assert ("capture.failures.pokeball", "PokemonReleased", "combat.compensations") in arrows
    assert ("combat.compensations", "PokemonHealed", "capture.failures.combat") in arrows
    assert ("capture.failures.combat", "PokemonHealed", "status.compensations") in arrows
    assert ("status.compensations", "CaptureFailed", "capture.outcomes") in arrows


def test_the_asyncapi_document_validates_as_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == CAPTURE.name and document["info"]["version"]
    AsyncAPI.model_validate(document)
    wrong = json.loads(json.dumps(document))
    wrong["operations"]["status.receive.capture.status"]["action"] = "subscribe"  # AsyncAPI 2's word
    with pytest.raises(ValidationError):
        AsyncAPI.model_validate(wrong)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = refs(document)
    assert len(found) > 50
    for ref in found:
        resolve(document, ref)


def test_one_channel_per_topic_carrying_the_events_of_that_topic(document: dict[str, Any]) -> None:
    assert set(document["channels"]) == set(CAPTURE.topics)
    referenced = set()
    for key, channel in document["channels"].items():
        assert channel["address"] == key
        for name, message in channel["messages"].items():
            assert resolve(document, message["$ref"])["name"] == name
            assert CAPTURE.types[name].belongs_on(key)  # its topic, or where an earlier release sent it
            referenced.add(name)
    former = document["channels"]["capture.failures"]
    assert "no longer written" in former["description"]
    assert set(former["messages"]) == {name for name, cls in CAPTURE.types.items() if cls.former_topics}
    assert referenced == set(document["components"]["messages"]) == set(CAPTURE.types)


def test_each_message_is_an_envelope_whose_data_is_the_exported_event_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    exported = {name: json.loads(text) for name, text in jsonschema.render().items()}
    for name, message in document["components"]["messages"].items():
        envelope, this = message["payload"]["allOf"]
        assert resolve(document, envelope["$ref"]) == schemas["Envelope"]
        assert this["properties"]["type"] == {"const": name}
        data = resolve(document, this["properties"]["data"]["$ref"])
        # The exported file, its definitions moved to the components: the same schema.
        schema = json.loads(json.dumps(exported[f"{name}.json"]).replace("#/$defs/", "#/components/schemas/"))
        for def_name, definition in schema.pop("$defs", {}).items():
            assert schemas[def_name] == definition
        assert data == schema
    assert schemas["Envelope"] == exported["envelope.json"]


def test_operations_receive_what_each_participant_handles_and_send_what_it_publishes(
    document: dict[str, Any],
) -> None:
    received: dict[str, set[str]] = {}
    sent: dict[str, set[str]] = {}
    for key, operation in document["operations"].items():
        channel = resolve(document, operation["channel"]["$ref"])
        party = key.split(f".{operation['action']}.")[0]
        for message in operation["messages"]:
            # An operation's messages are its channel's.
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            name = resolve(document, message["$ref"])["name"]
            assert CAPTURE.types[name].belongs_on(channel["address"])
            if operation["action"] == "send":
                assert CAPTURE.types[name].topic == channel["address"]  # sent only where it goes now
            (received if operation["action"] == "receive" else sent).setdefault(party, set()).add(name)
    published = CAPTURE.published
    for name, participant in CAPTURE.participants.items():
        assert received[name] == set(participant.handlers)
        assert sent[name] == {cls.__name__ for cls in published[name]}
    assert sent[docs.CLIENT] == {CAPTURE.start.__name__}
    assert received[docs.CLIENT] == CAPTURE.outcome_types
    assert set(received) == set(sent) == {*CAPTURE.participants, docs.CLIENT}
    everything_sent = set().union(*sent.values())
    assert everything_sent == set(CAPTURE.types), "every event has a sender"
    assert set().union(*received.values()) == set(CAPTURE.types), "every event has a receiver"


def test_pokesaga_docs_writes_the_documents_and_prints_their_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rendered: dict[str, str]
) -> None:
    assert main(["docs", "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / name) for name in rendered]
    for name, text in rendered.items():
        assert (tmp_path / "out" / name).read_text(encoding="utf-8") == text


def test_every_guarantee_in_the_readme_names_a_test_that_exists() -> None:
    """README's "Guarantees" table: each promise names the test that tries to falsify it."""
    section = doc_section("Guarantees, and where they live")
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| promise")]
    assert rows, "the Guarantees table is gone"
    for row in rows:
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row)
        assert named, f"a promise with no test: {row[:80]}"
        for path, name in named:
            source = ROOT / path
            found = source.exists() and re.search(rf"^(async )?def {name}\(", source.read_text(), re.M)
            assert found, f"README names {path}::{name}, which does not exist"
