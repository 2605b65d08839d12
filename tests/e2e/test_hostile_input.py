"""Hostile input: records any Kafka client can write never halt, crash or fool a service.

The four services run as separate processes on a broker of their own. Records are written
with a plain producer: hypothesis-generated ones (random bytes, random JSON, valid envelopes
mutated field by field, reused and repeated ids, known events on the wrong topic) and one
named case per class of record that used to break a service. After them every process is
alive, no group keeps lag, a healthy saga completes, and every hostile record is accounted
for from the outside: a dead letter with its reason, or one outcome for the valid saga it
started (or a counted duplicate of one that did), and the metrics count exactly that.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from capture.bootstrap import PARTICIPANTS
from capture.saga import CAPTURE
from capture.settings import SERVICES
from capture.starter import start_event
from contracts import topics
from engine.broker import kafka
from engine.local.broker import free_port
from engine.wire.envelope import start_event_id
from engine.worker import rebuild as history
from tests import hostile
from tests.conftest import new_broker
from tests.e2e.conftest import CERTAIN, GROUPS, Cluster, cluster, pokesaga
from tests.support import Samples, eventually, http_get, metric_samples, total

# At least 300 generated records per pass on each of the two topics; in CI, the same ones every run.
ROUNDS = int(os.environ.get("POKESAGA_HOSTILE_ROUNDS", "3"))
PER_ROUND = 110
DERANDOMIZE = bool(os.environ.get("CI"))
REASON = "pokesaga.dlq.reason"


@pytest.fixture(scope="module")
def hostile_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, int]]]:
    """A broker of its own (every dead letter on it is one of this module's) and the four services."""
    ports = {service: free_port() for service in SERVICES}
    per_instance = {service: {"POKESAGA_METRICS_PORT": str(port)} for service, port in ports.items()}
    data = tmp_path_factory.mktemp("hostile")
    with new_broker(data / "broker") as bootstrap, cluster(bootstrap, data, per_instance=per_instance) as running:
        running.start("tracker", POKESAGA_TRACKER_PORT=str(ports.setdefault("tracker", free_port())))
        yield running, ports


# -- reading the outcome from the outside -------------------------------------------------


@dataclass
class Topics:
    """Every record on the broker's saga topics, as a user would read them."""

    records: dict[str, list[ConsumerRecord[bytes, bytes]]] = field(default_factory=dict)

    def dead_letters(self, topic: str) -> dict[tuple[int, int], list[str]]:
        """(partition, offset) of each source record → the reasons it was dead-lettered with."""
        found: dict[tuple[int, int], list[str]] = {}
        for record in self.records.get(topics.dead_letters(topic), []):
            headers = {k: (v or b"").decode() for k, v in record.headers}
            origin = (int(headers["pokesaga.dlq.partition"]), int(headers["pokesaga.dlq.offset"]))
            found.setdefault(origin, []).append(headers[REASON])
        return found

    def documents(self, topic: str) -> list[dict[str, Any]]:
        """What the services published on ``topic`` (the hostile records there are left out)."""
        found = []
        for record in self.records.get(topic, []):
            if record.value and record.value.startswith(b'{"specversion":"1.0"'):  # how pokesaga writes them
                doc = json.loads(record.value)
                if str(doc.get("source", "")).startswith("pokesaga/"):
                    found.append(doc)
        return found

    def outcomes(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for doc in self.documents(topics.OUTCOMES):
            found.setdefault(doc["sagaid"], []).append(doc["type"])
        return found

    def held(self) -> set[str]:
        """Ids of the records a participant holds for a newer version (its notices say so)."""
        notices = self.documents(CAPTURE.retries_topic)
        return {d["causationid"] for d in notices if str(d["data"].get("error", "")).startswith("newer_version")}

    def applied_by_status(self) -> set[str]:
        """Ids of the start events the status step applied: what it published names them as cause."""
        published = self.documents(topics.COMBAT) + self.documents(topics.STATUS_FAILURES)
        return {d["causationid"] for d in published if d.get("source") == "pokesaga/status"}


async def quiet(running: Cluster) -> Topics:
    """Wait until every group has consumed everything and nothing more is being published; read it all."""
    bootstrap = running.settings.bootstrap
    names = CAPTURE.all_topics()
    tps = [TopicPartition(t, p) for t in names for p in await kafka.partition_ids(bootstrap, t)]
    reader = kafka.consumer(bootstrap, None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await reader.start()
    await admin.start()
    last: dict[TopicPartition, int] = {}

    async def settled() -> bool:
        nonlocal last
        ends = await reader.end_offsets(tps)
        done = ends == last
        for group, topics_read in GROUPS.items():
            mine = [tp for tp in tps if tp.topic in topics_read]
            committed = await admin.list_consumer_group_offsets(group, partitions=mine)
            done = done and all(committed[tp].offset >= ends[tp] for tp in mine if ends[tp])
        last = ends
        return done

    try:
        await eventually(settled, timeout=120, what="every consumer group caught up, nothing in flight")
    finally:
        await reader.stop()
        await admin.close()
    read = Topics()
    records, _ = await kafka.read_to_end(bootstrap, names)
    for record in records:
        read.records.setdefault(record.topic, []).append(record)
    return read


def scrape(ports: dict[str, int]) -> list[Samples]:
    """The services' /metrics (the tracker's are its own)."""
    return [metric_samples(port) for name, port in ports.items() if name != "tracker"]


def assert_alive(running: Cluster) -> None:
    dead = [name for name, process in running.processes.items() if not process.alive]
    assert not dead, f"service processes died: {dead}"


async def healthy_saga_completes(running: Cluster) -> None:
    saga = f"healthy-{uuid.uuid4().hex[:8]}"
    envelope = start_event(saga, {"name": f"H-{saga}"}, {"name": "Pidgey", **CERTAIN})
    await hostile.produce(running.settings.bootstrap, topics.STATUS, [(saga.encode(), envelope.to_json())])
    read = await quiet(running)
    assert read.outcomes().get(saga) == ["PokemonDelivered"]


# -- the generated records ----------------------------------------------------------------

SAGAS = [f"h-{i}" for i in range(12)]  # a small pool: sagas are started twice, ids reused
FAILING = [f"f-{i}" for i in range(12)]  # failure events name only sagas nobody started
IDS = [f"id-{i}" for i in range(20)]

EXTREME_NUMBERS = [0, -1, 1, 255, 256, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 + 1, -(2**63) - 1, 10**100]
NASTY_TEXT = ["", " ", "\x00", "a\x00b", "\n", "\ud800", "é" * 70, "🐉" * 300, "x" * 5000, "‮gnirts"]
ENVELOPE_FIELDS = ["specversion", "id", "source", "type", "time", "subject", "sagaid", "causationid", "dataversion"]
DATA_FIELDS = [
    ("trainer",), ("trainer", "name"), ("trainer", "lead"), ("trainer", "lead", "level"), ("trainer", "lead", "name"),
    ("pokemon",), ("pokemon", "name"), ("pokemon", "hp"), ("pokemon", "max_hp"), ("pokemon", "level"),
    ("pokemon", "status"), ("pokemon", "types"), ("pokemon", "catch_rate"),
    ("reason",), ("failed_step",), ("detail",), ("undone",), ("shakes",),
]  # fmt: skip
EVENT_TYPES = [
    "PokemonEncountered", "PokemonParalyzed", "PokemonFainted", "PokemonBrokeFree", "DeliveryFailed",
    "PokemonHealed", "CaptureFailed", "PokemonDelivered", "PokemonEvolved", "pokemonencountered",
]  # fmt: skip


def _nest(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return inner | st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)


# JSON three levels deep (st.recursive is as expressive, but ~100x slower to draw lists of)
json_values = _nest(_nest(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)))
hostile_values = st.one_of(
    json_values,
    st.sampled_from(EXTREME_NUMBERS),
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=80),
    st.just([[[[[[[[["deep"]]]]]]]]]),
)


@st.composite
def mutated(draw: st.DrawFn, topic: str) -> dict[str, Any]:
    """A valid envelope of an event of the saga, then one to three fields changed or removed."""
    pool = SAGAS if topic == topics.STATUS else FAILING
    saga = draw(st.sampled_from(pool))
    event_id = draw(st.sampled_from(IDS) | st.uuids().map(str))
    type_ = (
        "PokemonEncountered" if topic == topics.STATUS and draw(st.booleans()) else draw(st.sampled_from(EVENT_TYPES))
    )
    doc = hostile.envelope(saga, event_id, type_)
    doc["data"].update({
        "reason": "broke_free", "failed_step": "pokeball", "previous_status": "HEALTHY",
        "hp_before": 10, "damage": 3, "ball": "Poke Ball", "shakes": 2, "location": "party", "slot": 1,
    })  # fmt: skip
    if topic == topics.STATUS and draw(st.integers(0, 3)) == 0:
        return doc  # sometimes unchanged: a valid saga (or a repeat of one)
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            target, path = doc, (draw(st.sampled_from(ENVELOPE_FIELDS)),)
        else:
            target, path = doc["data"], draw(st.sampled_from(DATA_FIELDS))
        for step in path[:-1]:
            if not isinstance(target.get(step), dict):
                break
            target = target[step]
        else:
            if draw(st.integers(0, 4)) == 0:
                target.pop(path[-1], None)
            else:
                target[path[-1]] = draw(hostile_values)
    return doc


class Raw(tuple):  # type: ignore[type-arg]
    """(key, value), with a short repr: hypothesis prints failing examples."""

    def __repr__(self) -> str:
        return f"Raw({self[0]!r:.60}, {self[1]!r:.200})"


@st.composite
def hostile_record(draw: st.DrawFn, topic: str) -> tuple[bytes | None, bytes | None]:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        value: bytes | None = draw(st.binary(max_size=300))
    elif kind == 1:
        value = json.dumps(draw(json_values)).encode()
    elif kind == 2:
        value = draw(
            st.sampled_from([None, b"", b"{}", b"null", b"[]", hostile.nested(3000), b'{"id": 1' + b"9" * 5000 + b"}"])
        )
    else:
        doc = draw(mutated(topic))
        value = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        saga = doc.get("sagaid")
        if isinstance(saga, str) and draw(st.integers(0, 5)):
            return Raw((saga.encode("utf-8", "surrogatepass"), value))
    key = draw(st.none() | st.binary(max_size=40) | st.sampled_from([s.encode() for s in SAGAS]))
    if key is None and value is None:
        key = b""  # a Kafka record has a key or a value
    return Raw((key, value))


EARLIER: set[str] = set()  # start event ids applied in earlier rounds: a repeat of one is a duplicate


def _event_id(value: bytes | None) -> object:
    """The ``id`` of a record that is a JSON object; None otherwise."""
    try:
        doc = json.loads(value or b"")
    except (ValueError, RecursionError):  # not JSON, or nested too deeply
        return None
    return doc.get("id") if isinstance(doc, dict) else None


def account(read: Topics, sent: list[tuple[int, int, bytes | None]]) -> tuple[int, set[str]]:
    """Check every record sent to capture.status: returns (duplicates, sagas started)."""
    dead = read.dead_letters(topics.STATUS)
    applied = read.applied_by_status()
    outcomes = read.outcomes()
    held = read.held()
    duplicates, started, seen_ids = 0, set(), set()
    for partition, offset, value in sent:
        reasons = dead.get((partition, offset))
        if reasons is not None:
            assert len(reasons) == 1 and reasons[0], (partition, offset, reasons)
            continue
        doc = json.loads(value or b"")  # not dead-lettered: it must be a start event of the saga
        event_id, saga = doc["id"], doc["sagaid"]
        if event_id in held and event_id not in applied:  # a "dataversion" above 1: held for an upgrade
            assert int(doc["dataversion"]) > 1, (partition, offset, doc.get("dataversion"))
            continue
        if event_id in applied and event_id not in seen_ids:
            assert outcomes.get(saga, []) and len(outcomes[saga]) == 1, (saga, outcomes.get(saga))
            started.add(saga)
            seen_ids.add(event_id)
        else:
            repeat = event_id in seen_ids | EARLIER
            assert repeat, f"record {partition}:{offset} was neither applied, dead-lettered, nor a repeat"
            duplicates += 1
    EARLIER.update(seen_ids)
    return duplicates, started


# -- the tests ----------------------------------------------------------------------------


@settings(
    max_examples=ROUNDS,
    deadline=None,
    database=None,
    derandomize=DERANDOMIZE,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is a whole run on the services
    suppress_health_check=list(HealthCheck),
)
@given(
    st.lists(hostile_record(topics.STATUS), min_size=PER_ROUND, max_size=PER_ROUND),
    st.lists(hostile_record(topics.FAILURES), min_size=PER_ROUND, max_size=PER_ROUND),
)
def test_generated_hostile_records_are_all_accounted_for_and_stop_nothing(
    hostile_cluster: tuple[Cluster, dict[str, int]],
    on_status: list[tuple[bytes | None, bytes | None]],
    on_failures: list[tuple[bytes | None, bytes | None]],
) -> None:
    running, ports = hostile_cluster
    bootstrap = running.settings.bootstrap

    async def scenario() -> None:
        before_topics = await quiet(running)
        before = scrape(ports)
        status_at = await hostile.produce(bootstrap, topics.STATUS, on_status)
        failures_at = await hostile.produce(bootstrap, topics.FAILURES, on_failures)
        read = await quiet(running)
        after = scrape(ports)
        assert_alive(running)
        # Only this round's records: what was on the topics before is left out.
        for name, records in read.records.items():
            old = {(r.partition, r.offset) for r in before_topics.records.get(name, [])}
            read.records[name] = [r for r in records if (r.partition, r.offset) not in old]

        sent = [(p, o, value) for (p, o), (_, value) in zip(status_at, on_status, strict=True)]
        duplicates, started = account(read, sent)
        # Every record on capture.failures names a saga nobody started: each is a dead letter, or
        # held for an upgrade when it says it is of a newer version than the compensators read.
        dead_failures, held = read.dead_letters(topics.FAILURES), read.held()
        missing = [at for at, (_, value) in zip(failures_at, on_failures, strict=True)
                   if at not in dead_failures and _event_id(value) not in held]  # fmt: skip
        assert not missing, f"records on capture.failures neither applied nor dead-lettered: {missing}"
        # Outcomes: only for sagas started this round, one each.
        for saga, types in read.outcomes().items():
            assert saga in started and len(types) == 1, (saga, types)
        # The metrics count exactly that.
        dead_total = sum(len(read.records.get(topics.dead_letters(t), [])) for t in topics.ALL)

        def grew(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(before, name, **labels)

        assert grew("pokesaga_dead_letters_total") == dead_total
        assert grew("pokesaga_duplicates_total", participant="status") == duplicates
        assert grew("pokesaga_events_consumed_total", participant="status") == len(started)
        await healthy_saga_completes(running)

    asyncio.run(scenario())


@dataclass
class Case:
    """A named hostile record: where it goes, and the kind of reason its dead letter must give."""

    name: str
    value: bytes | None
    kind: str
    key: bytes | None = b"named"
    contains: str = ""


def named_cases(run: str) -> list[Case]:
    def start(**changes: Any) -> dict[str, Any]:
        return hostile.envelope(f"{run}-x", f"{run}-{uuid.uuid4().hex[:6]}", **changes)

    def pokemon(**fields: Any) -> bytes:
        doc = start()
        doc["data"]["pokemon"].update(fields)
        return hostile.encode(doc)

    nul_trainer = start()
    nul_trainer["data"]["trainer"]["name"] = "Mal\x00lory"
    return [
        Case("deep nesting", hostile.nested(5000), "not_json", contains="nested too deeply"),
        Case("an integer 5000 digits long", b'{"specversion": "1.0", "id": ' + b"7" * 5000 + b"}", "not_json"),
        Case("hp beyond 64 bits", pokemon(hp=2**70, max_hp=2**70), "invalid_data", contains="pokemon.hp"),
        Case("hp beyond 32 bits", pokemon(hp=2**40, max_hp=2**40), "invalid_data", contains="pokemon.hp"),
        Case("a NUL in a string", hostile.encode(nul_trainer), "invalid_data", contains="trainer.name"),
        Case("time as a number", hostile.encode(start(time=1732356000)), "not_cloudevent", contains="time"),
        Case("not UTF-8", b"\xff\xfe\xfd", "not_json"),
        Case("an empty record", None, "empty"),
        Case("an unknown event type", hostile.encode(start(type="PokemonEvolved")), "unknown_type"),
        Case("a known event on the wrong topic", hostile.encode(start(type="PokemonDelivered")), "wrong_topic"),
        Case("a huge string", hostile.encode(start(source="s" * 300_000)), "not_cloudevent", contains="source"),
    ]


def test_each_class_of_hostile_record_gets_a_dead_letter_with_its_reason(
    hostile_cluster: tuple[Cluster, dict[str, int]],
) -> None:
    running, _ = hostile_cluster
    bootstrap = running.settings.bootstrap
    cases = named_cases(f"named-{uuid.uuid4().hex[:6]}")

    async def scenario() -> None:
        placed = await hostile.produce(bootstrap, topics.STATUS, [(c.key, c.value) for c in cases])
        unreadable_at = hostile.produce_unreadable(bootstrap, topics.STATUS, "unreadable", "{}")
        read = await quiet(running)
        assert_alive(running)
        dead = read.dead_letters(topics.STATUS)
        for case, at in zip(cases, placed, strict=True):
            assert at in dead, f"{case.name}: no dead letter"
            (reason,) = dead[at]
            assert reason.startswith(case.kind + ":") and case.contains in reason, (case.name, reason)
        assert dead[unreadable_at][0].startswith("unreadable: header key 1 is not UTF-8"), dead[unreadable_at]
        await healthy_saga_completes(running)

    asyncio.run(scenario())


def test_a_saga_started_again_under_a_new_event_id_is_a_dead_letter_not_a_stuck_partition(
    hostile_cluster: tuple[Cluster, dict[str, int]],
) -> None:
    """What a client that regenerates the CloudEvents id on retry does."""
    running, _ = hostile_cluster
    saga = f"again-{uuid.uuid4().hex[:6]}"
    first = start_event(saga, {"name": f"A-{saga}"}, {"name": "Pidgey", **CERTAIN})
    retry = json.loads(first.to_json()) | {"id": str(uuid.uuid4())}

    async def scenario() -> None:
        records = [(saga.encode(), first.to_json()), (saga.encode(), hostile.encode(retry))]
        (_, (partition, offset)) = await hostile.produce(running.settings.bootstrap, topics.STATUS, records)
        read = await quiet(running)
        assert read.outcomes()[saga] == ["PokemonDelivered"]
        (reason,) = read.dead_letters(topics.STATUS)[(partition, offset)]
        assert reason.startswith(f"conflicting_copy: saga '{saga}' already had its PokemonEncountered"), reason
        await healthy_saga_completes(running)

    asyncio.run(scenario())


def test_a_start_event_of_a_newer_version_is_held_and_shown_not_applied_as_version_1(
    hostile_cluster: tuple[Cluster, dict[str, int]],
) -> None:
    """A client writes ``"dataversion": 2`` for an event that has only version 1: the status step
    holds it (no decision published, the partition going on), says why on the retries topic, and
    ``pokesaga inspect saga`` shows it."""
    running, _ = hostile_cluster
    saga = f"newer-{uuid.uuid4().hex[:6]}"
    doc = json.loads(start_event(saga, {"name": f"N-{saga}"}, {"name": "Pidgey", **CERTAIN}).to_json())
    doc["dataversion"] = 2

    async def scenario() -> None:
        await hostile.produce(running.settings.bootstrap, topics.STATUS, [(saga.encode(), hostile.encode(doc))])
        read = await quiet(running)
        assert doc["id"] in read.held() and doc["id"] not in read.applied_by_status()
        assert saga not in read.outcomes()
        await healthy_saga_completes(running)  # the partition, and every other saga, go on

    asyncio.run(scenario())
    shown = pokesaga(running.settings, "inspect", "saga", saga)
    assert shown.returncode == 0, shown.stderr
    assert "status  PokemonEncountered  newer_version: PokemonEncountered version 2; this instance reads up to " \
           "version 1; held for an upgraded instance\n" in shown.stdout  # fmt: skip


def test_an_event_id_reused_by_another_saga_silences_neither(hostile_cluster: tuple[Cluster, dict[str, int]]) -> None:
    running, _ = hostile_cluster
    run = uuid.uuid4().hex[:6]
    first = start_event(f"owner-{run}", {"name": f"O-{run}"}, {"name": "Pidgey", **CERTAIN})
    thief = json.loads(start_event(f"thief-{run}", {"name": f"T-{run}"}, {"name": "Pidgey", **CERTAIN}).to_json())
    thief["id"] = first.id  # another saga's start event id
    assert first.id == start_event_id(first.sagaid, "PokemonEncountered")

    async def scenario() -> None:
        # Across partitions there is no first: the owner is applied before the thief is written.
        await hostile.produce(running.settings.bootstrap, topics.STATUS, [(first.sagaid.encode(), first.to_json())])
        await eventually(lambda: _outcome_of(running, first.sagaid), timeout=60, what="the owner's outcome")
        (at,) = await hostile.produce(running.settings.bootstrap, topics.STATUS, [(b"thief", hostile.encode(thief))])
        read = await quiet(running)
        assert read.outcomes()[first.sagaid] == ["PokemonDelivered"]
        assert f"thief-{run}" not in read.outcomes()
        (reason,) = read.dead_letters(topics.STATUS)[at]
        assert reason.startswith(f"event_id_reused: event id '{first.id}' was applied for saga 'owner-{run}'")

    asyncio.run(scenario())


async def _outcome_of(running: Cluster, saga: str) -> bool:
    records, _ = await kafka.read_to_end(running.settings.bootstrap, [topics.OUTCOMES])
    return any(r.key == saga.encode() for r in records)


def test_a_compensation_for_a_saga_nobody_started_is_a_dead_letter(
    hostile_cluster: tuple[Cluster, dict[str, int]],
) -> None:
    running, ports = hostile_cluster
    run = uuid.uuid4().hex[:6]
    forged = {
        "PokemonFainted": "status never saw saga",
        "PokemonBrokeFree": "combat never attacked in saga",
        "DeliveryFailed": "pokeball never threw in saga",
    }

    async def scenario() -> None:
        before = scrape(ports)
        records = []
        for type_ in forged:
            doc = hostile.envelope(f"ghost-{type_}-{run}", f"{type_}-{run}", type_)
            doc["data"].update({"reason": "broke_free", "failed_step": "pokeball"})
            records.append((doc["sagaid"].encode(), hostile.encode(doc)))
        placed = await hostile.produce(running.settings.bootstrap, topics.FAILURES, records)
        read = await quiet(running)
        dead = read.dead_letters(topics.FAILURES)
        for (type_, says), at in zip(forged.items(), placed, strict=True):
            (reason,) = dead[at]
            assert reason.startswith(f"unknown_saga: {says} 'ghost-{type_}-{run}'"), reason
        assert not any(saga.startswith("ghost-") for saga in read.outcomes())
        after = scrape(ports)
        grown = total(after, "pokesaga_dead_letters_total", kind="unknown_saga") - total(
            before, "pokesaga_dead_letters_total", kind="unknown_saga"
        )
        assert grown == 3

    asyncio.run(scenario())


def test_a_record_at_the_size_limit_is_dead_lettered_whole_or_said_to_be_cut(
    hostile_cluster: tuple[Cluster, dict[str, int]],
) -> None:
    running, _ = hostile_cluster
    big = b"{" + b" " * 1_000_000 + b"}"  # JSON, but no CloudEvent: as large as a client may write
    headers = [("h", b"v" * 10_000), ("null-header", None)]

    async def scenario() -> None:
        (at,) = await hostile.produce(running.settings.bootstrap, topics.STATUS, [(b"big", big)], headers=headers)
        read = await quiet(running)
        copies = [
            r for r in read.records[topics.dead_letters(topics.STATUS)]
            if (dict(r.headers).get("pokesaga.dlq.offset") or b"").decode() == str(at[1])
            and (dict(r.headers).get("pokesaga.dlq.partition") or b"").decode() == str(at[0])
        ]  # fmt: skip
        (copy,) = copies
        stated = {k: (v or b"").decode() for k, v in copy.headers}
        assert stated[REASON].startswith("not_cloudevent:")
        assert stated["pokesaga.dlq.truncated"] == str(len(big))
        assert big.startswith(copy.value) and len(copy.value) > 900_000
        assert_alive(running)

    asyncio.run(scenario())


def test_hostile_records_are_counted_by_kind(hostile_cluster: tuple[Cluster, dict[str, int]]) -> None:
    """The dead-letter metric's kinds are the reasons' kinds, a small fixed set."""
    _, ports = hostile_cluster
    kinds = Counter(
        dict(labels)["kind"]
        for found in scrape(ports)
        for (sample, labels), value in found.items()
        if sample == "pokesaga_dead_letters_total" and value
    )
    allowed = {"empty", "not_json", "not_cloudevent", "invalid_data", "unknown_type", "wrong_topic", "unreadable",
               "event_id_reused", "conflicting_copy", "unknown_saga", "compensation_failed", "failure_path_failed",
               "internal_error"}  # fmt: skip
    assert set(kinds) <= allowed, set(kinds) - allowed


def test_the_readers_read_past_every_hostile_record(hostile_cluster: tuple[Cluster, dict[str, int]]) -> None:
    """Last, after every record above: the tracker, trace, dlq list and a rebuild's history."""
    running, ports = hostile_cluster
    bootstrap, port = running.settings.bootstrap, ports["tracker"]
    saga = f"read-{uuid.uuid4().hex[:8]}"
    envelope = start_event(saga, {"name": f"R-{saga}"}, {"name": "Pidgey", **CERTAIN})

    async def scenario() -> Topics:
        await hostile.produce(bootstrap, topics.STATUS, [(saga.encode(), envelope.to_json())])

        async def tracked() -> bool:
            status, body = http_get(port, f"/sagas/{saga}")
            return status == 200 and body["state"] == "delivered"

        await eventually(tracked, timeout=120, what=f"the tracker to show {saga} delivered")
        return await quiet(running)

    read = asyncio.run(scenario())
    assert_alive(running)
    for path in ("/", "/sagas?limit=1000", "/sagas?state=failed", "/metrics"):
        assert http_get(port, path)[0] == 200, path
    skipped = total([metric_samples(port)], "pokesaga_tracker_records_skipped_total")
    assert skipped >= 300  # at least the generated garbage on capture.status and capture.failures
    traced = pokesaga(running.settings, "trace", saga)
    assert traced.returncode == 0 and f"saga {saga}: delivered" in traced.stdout, traced.stderr
    for topic in (topics.STATUS, topics.FAILURES):
        listed = pokesaga(running.settings, "dlq", "list", topic)
        count = len(read.records[topics.dead_letters(topic)])
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.strip().splitlines()[-1] == f"{count} dead letters in {topics.dead_letters(topic)}"
    recorded = asyncio.run(history.load(bootstrap, list(PARTICIPANTS.values()), CAPTURE.topics, CAPTURE.types))
    assert recorded["delivery"], "the rebuild's history found the deliveries among the hostile records"
