"""A rebuild's history is on disk: what it holds in memory is bounded, whatever the topics hold,
and a lookup returns exactly what was recorded (engine.worker.history)."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.wire.envelope import Envelope, derive_id
from engine.worker.history import History, key

pytestmark = pytest.mark.no_database

TYPES = ("PokemonCaught", "PokemonBrokeFree", "OutOfPokeballs", "PokemonReleased")


def envelope(cause: str, type_: str, saga: str, note: str = "") -> Envelope:
    return Envelope.model_validate(
        {"specversion": "1.0", "id": derive_id(cause, type_), "source": "pokesaga/pokeball", "type": type_,
         "sagaid": saga, "causationid": cause, "data": {"note": note}}
    )  # fmt: skip


def record(history: History, reference: dict[str, dict[str, Envelope]], e: Envelope) -> None:
    """Add ``e`` to the history and to the reference: the old way, a dict in memory (first copy kept)."""
    assert e.causationid is not None
    history.add(e.causationid, e.id, e.to_json())
    reference.setdefault(e.causationid, {}).setdefault(e.id, e)
    assert history.held <= history.cache
    assert history.held_bytes <= history.cache_bytes + len(e.to_json())


def test_lookups_return_what_was_recorded_while_memory_stays_under_the_cap() -> None:
    cap, count = 50, 5_000
    history, reference = History(cache=cap), {}
    rng = random.Random(21)
    for n in range(count):
        cause = f"cause-{n}"
        record(history, reference, envelope(cause, TYPES[0], f"saga-{n}", "first"))
        if n % 7 == 0:  # a step that published two events for one cause
            record(history, reference, envelope(cause, TYPES[3], f"saga-{n}"))
        if n % 5 == 0:  # a re-publication, later: the same event, its first copy is the one kept
            record(history, reference, envelope(cause, TYPES[0], f"saga-{n}", "second copy"))
        if n % 11 == 0:  # a hostile client: the same cause and id for another saga
            record(history, reference, envelope(cause, TYPES[0], f"forged-{n}", "forged"))
        if n % 13 == 0:  # a hostile client: an earlier cause, its record long written to disk
            old = f"cause-{rng.randrange(n + 1)}"
            record(history, reference, envelope(old, TYPES[2], "forged", "late"))
    history.loaded()
    assert len(history) == count == len(reference)

    causes = [f"cause-{n}" for n in range(count)] + ["never-recorded", ""]
    rng.shuffle(causes)
    for start in range(0, len(causes), 500):  # batches of 500: ten times the cap
        batch = causes[start : start + 500]
        history.prefetch(batch)
        assert history.held <= cap
        for cause in batch:
            expected = list(reference.get(cause, {}).values())
            assert list(history.get(cause, ())) == expected
            assert history.held <= cap
    assert history.peak <= cap
    assert history.get("never-recorded") == ()
    assert history.get("never-recorded", None) is None  # type: ignore[arg-type]
    listed = {cause: list(events) for cause, events in history.items()}  # ten pages
    assert listed == {cause: list(events.values()) for cause, events in reference.items()}
    assert history.peak <= cap


def test_large_records_are_held_up_to_the_byte_budget_and_one_cause() -> None:
    """A hostile client's records, each as large as a broker takes, valid and with the right ids:
    what is held in memory is bounded by the bytes too, not only by the number of causes."""
    budget, count = 1_000_000, 120
    history, reference = History(cache=1_000, cache_bytes=budget), {}
    sizes: dict[str, int] = {}
    for n in range(count):
        cause = f"big-{n}"
        for type_ in TYPES[: 1 + n % 3]:  # one to three events a cause
            e = envelope(cause, type_, f"s{n}", "x" * (60_000 + 1_000 * (n % 50)))
            record(history, reference, e)
            sizes[cause] = sizes.get(cause, 0) + len(e.to_json())
            assert history.held_bytes <= budget + len(e.to_json())
    history.loaded()
    largest = max(sizes.values())
    causes = [*reference, "never-recorded"]
    random.Random(3).shuffle(causes)
    for start in range(0, len(causes), 50):  # 50 causes a batch: 3 to 8 MB, more than the budget
        batch = causes[start : start + 50]
        history.prefetch(batch)
        assert history.held_bytes <= budget + largest
        for cause in batch:
            assert list(history.get(cause)) == list(reference.get(cause, {}).values())
            assert history.held_bytes <= budget + largest
    assert history.peak_bytes <= budget + largest and history.peak <= 1_000


def test_a_batch_is_read_in_one_lookup_and_then_served_from_memory() -> None:
    history = History(cache=1_000)
    for n in range(300):
        history.add(f"c{n}", derive_id(f"c{n}", TYPES[0]), envelope(f"c{n}", TYPES[0], f"s{n}").to_json())
    history.loaded()
    before = history.lookups
    history.prefetch(f"c{n}" for n in range(300))
    assert history.lookups == before + 1
    assert all(history.get(f"c{n}")[0].sagaid == f"s{n}" for n in range(300))
    assert history.lookups == before + 1


def test_an_empty_history_opens_no_file_and_a_closed_one_holds_nothing() -> None:
    empty = History.of({})
    assert len(empty) == 0 and empty.get("x") == () and not empty._file.is_open
    e = envelope("c", TYPES[0], "s")
    history = History.of({"c": [e]})
    assert history.get(key("s", "c")) == (e,) and history.get("c") == ()  # kept with its saga
    history.close()
    assert history.get(key("s", "c")) == () and history.held == 0 and len(history) == 0


def test_lookups_from_several_threads_agree() -> None:
    history = History(cache=20)
    for n in range(2_000):
        history.add(f"c{n}", derive_id(f"c{n}", TYPES[0]), envelope(f"c{n}", TYPES[0], f"s{n}").to_json())
    history.loaded()
    wrong: list[str] = []

    def read(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(2_000):
            n = rng.randrange(2_000)
            found = history.get(f"c{n}")
            if [e.sagaid for e in found] != [f"s{n}"]:
                wrong.append(f"c{n}")

    threads = [threading.Thread(target=read, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [] and history.peak <= 20


def name(n: int) -> str:
    return f"c{n}"


@settings(max_examples=60, deadline=None)
@given(
    cap=st.integers(1, 8),
    cap_bytes=st.integers(1, 3_000),  # an envelope here is ~300 bytes: a few causes fit, or none
    adds=st.lists(st.tuples(st.integers(0, 12), st.sampled_from(TYPES), st.integers(0, 3)), max_size=80),
    batches=st.lists(st.lists(st.integers(0, 14), max_size=20), max_size=6),
)
def test_any_sequence_of_records_reads_back_as_the_old_way_kept_it(
    cap: int, cap_bytes: int, adds: list[tuple[int, str, int]], batches: list[list[int]]
) -> None:
    history, reference = History(cache=cap, cache_bytes=cap_bytes), {}
    for cause, type_, saga in adds:
        record(history, reference, envelope(name(cause), type_, f"s{saga}", f"{cause}/{saga}"))
    history.loaded()
    assert len(history) == len(reference)
    largest = max((sum(len(e.to_json()) for e in events.values()) for events in reference.values()), default=0)
    for batch in batches:
        history.prefetch(name(n) for n in batch)
        for n in batch:
            assert list(history.get(name(n))) == list(reference.get(name(n), {}).values())
            assert history.held <= cap and history.held_bytes <= cap_bytes + largest
    assert history.peak <= cap and history.peak_bytes <= cap_bytes + largest
    assert {cause: list(events) for cause, events in history.items()} == {
        cause: list(events.values()) for cause, events in reference.items()
    }
    history.close()
