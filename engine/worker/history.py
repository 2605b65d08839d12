"""A rebuilding participant's history, on disk: memory follows the work in hand, not the history.

A rebuild (engine.worker.rebuild) re-applies the decisions a participant recorded on the topics, each
looked up by the id of the event that caused it. The topics hold every decision since they began
— at 10 sagas/s, six million a week — and held in memory as parsed envelopes (~4 KB a decision)
they outgrow the process, which dies and starts its rebuild again, for ever.

So the history is written, as the rebuild reads it from the topics, to a private temporary SQLite
database (``sqlite3.connect("")``): SQLite makes its file in its temporary directory
(``SQLITE_TMPDIR``, else ``TMPDIR``, else ``/var/tmp``, ``/usr/tmp``, ``/tmp``) and unlinks it at
once, so the file is gone when the history is closed (the rebuild over) or the process ends,
however it ends. Records are looked up as they come: a batch's causes in one query (``prefetch``),
the events kept parsed for the batch in hand. In memory there is, at most, whatever the topics hold:

- the recorded events of ``cache`` causes, parsed, of ``cache_bytes`` as published (parsed, they
  take several times as much) — plus one cause's, the one in hand, however large: the batches in
  hand, least recently used dropped first (a lookup for a dropped one goes back to the file);
- as many records read from the topics and not written to the file yet (while loading);
- SQLite's page cache, ``PAGE_CACHE_KIB``.

Decisions are kept by ``key(saga id, cause id)``, not by the cause id alone: a cause id is any
saga's to claim (a client can write records naming any cause), and keyed with their saga, records
of other sagas never pile up under one cause. A key holds at most two events per type of the saga
(an event's id derives from its saga, its cause and its type — or, written before that, from its
cause and type; a re-publication is the same event, and its first copy is the one kept), and a
record at most the broker's largest message. An empty history (the participant is not rebuilding) opens no
database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence

from engine.wire.codec import decode_envelope
from engine.wire.envelope import Envelope

CACHE = 2_000  # causes whose recorded events are held parsed; and records buffered while loading
CACHE_BYTES = 4 * 2**20  # their size as published (parsed, several times as much: ~4 KB for 550 bytes)
PAGE_CACHE_KIB = 4_096  # SQLite's page cache for the file
_CHUNK = 500  # causes per lookup query (SQLite's bound on parameters is 999 before 3.32)


def key(saga_id: str, cause_id: str) -> str:
    """Where the decisions a saga's event caused are kept: its saga and its id, unambiguous."""
    return json.dumps([saga_id, cause_id])


class _File:
    """The private temporary SQLite database a history is written to: made at the first write,
    deleted when closed (SQLite unlinks the file as soon as it makes it)."""

    def __init__(self) -> None:
        self.db: sqlite3.Connection | None = None

    @property
    def is_open(self) -> bool:
        return self.db is not None

    def write(self, rows: list[tuple[str, str, bytes]]) -> None:
        """(cause, event id, envelope) rows, in the order read: the first copy of an event is kept."""
        db = self._open()
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO history (cause, id, envelope) VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")

    def causes(self) -> int:
        return self.db.execute("SELECT count(DISTINCT cause) FROM history").fetchone()[0] if self.db else 0

    def cause_after(self, after: str | None) -> str | None:
        """The first cause (after ``after``, if given) in the order of their ids; None past the last."""
        where, args = ("", ()) if after is None else (" WHERE cause > ?", (after,))
        return self.db.execute(f"SELECT min(cause) FROM history{where}", args).fetchone()[0] if self.db else None

    def envelopes(self, cause: str) -> list[bytes]:
        """The events of ``cause``, as published, in the order they were first published."""
        query = "SELECT envelope FROM history WHERE cause = ? ORDER BY rowid"
        return [envelope for (envelope,) in self.db.execute(query, (cause,))] if self.db else []

    def rows(self, causes: list[str]) -> Iterator[tuple[str, bytes]]:
        """(cause, envelope) of ``causes``, a cause's events together and in the order published."""
        if self.db is None:
            return iter(())
        marks = ", ".join("?" * len(causes))
        query = f"SELECT cause, envelope FROM history WHERE cause IN ({marks}) ORDER BY cause, rowid"  # noqa: S608
        return iter(self.db.execute(query, causes))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        self.db = None

    def _open(self) -> sqlite3.Connection:
        if self.db is None:
            # "": a private temporary database on disk, deleted when it is closed (SQLite unlinks it
            # as soon as it makes it). Nothing to roll back: no journal; nothing to keep: no fsync.
            db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
            db.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute("PRAGMA temp_store = FILE")
            db.execute("CREATE TABLE history (cause TEXT NOT NULL, id TEXT NOT NULL, envelope BLOB NOT NULL)")
            db.execute("CREATE UNIQUE INDEX history_cause ON history (cause, id)")
            self.db = db
        return self.db


class _Parsed:
    """Causes' events held parsed, with their size as published; least recently used first."""

    def __init__(self) -> None:
        self._causes: OrderedDict[str, tuple[tuple[Envelope, ...], int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._causes)

    def __contains__(self, cause: str) -> bool:
        return cause in self._causes

    def get(self, cause: str) -> tuple[Envelope, ...] | None:
        """The events of ``cause`` if held (now the most recently used), else None."""
        found = self._causes.get(cause)
        if found is None:
            return None
        self._causes.move_to_end(cause)
        return found[0]

    def put(self, cause: str, events: tuple[Envelope, ...], size: int) -> None:
        self._causes[cause] = (events, size)
        self.bytes += size

    def make_room(self, causes: int, size: int, cache: int, cache_bytes: int) -> None:
        """Drop the least recently used causes until ``causes`` more of ``size`` bytes fit."""
        while self._causes and (len(self._causes) + causes > cache or self.bytes + size > cache_bytes):
            _, (_, dropped) = self._causes.popitem(last=False)
            self.bytes -= dropped

    def clear(self) -> None:
        self._causes.clear()
        self.bytes = 0


class History:
    """What one participant published before, by the id of its cause, on disk.

    Filled with ``add`` while the rebuild reads the topics, then ``loaded``; read with ``get``, a
    mapping's lookup, and ``prefetch`` (a batch's causes in one query). Safe to use from several
    threads, one at a time (a lock)."""

    def __init__(self, cache: int = CACHE, cache_bytes: int = CACHE_BYTES) -> None:
        if cache < 1 or cache_bytes < 1:
            raise ValueError("the cache must hold one cause at least")
        self.cache = cache
        self.cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._file = _File()  # opened at the first event added
        self._pending: list[tuple[str, str, bytes]] = []  # (cause, event id, envelope) not written yet
        self._pending_bytes = 0
        self._parsed = _Parsed()
        self._causes = 0
        self.peak = 0  # the most causes and records held in memory at once (``held``)
        self.peak_bytes = 0  # and the most bytes (``held_bytes``), reads under way included
        self.lookups = 0  # queries to the file

    @classmethod
    def of(cls, recorded: History | Mapping[str, Sequence[Envelope]], cache: int = CACHE) -> History:
        """``recorded`` (events by their cause's id) as a ``History`` (as is when it is one already)."""
        if isinstance(recorded, History):
            return recorded
        history = cls(cache)
        for cause, envelopes in recorded.items():
            for envelope in envelopes:
                history.add(key(envelope.sagaid, cause), envelope.id, envelope.to_json())
        history.loaded()
        return history

    @property
    def held(self) -> int:
        """Causes held parsed plus records waiting to be written: never more than ``cache`` each."""
        return len(self._parsed) + len(self._pending)

    @property
    def held_bytes(self) -> int:
        """Their size as published: never more than ``cache_bytes`` and one cause's, or one record's."""
        return self._parsed.bytes + self._pending_bytes

    def __len__(self) -> int:
        """The causes with a recorded decision (counted at ``loaded``)."""
        return self._causes

    def add(self, cause: str, event_id: str, envelope: bytes) -> None:
        """``envelope`` (an event's record, as published) was published for ``cause``. A second
        copy of an event (the same id for the same cause) is ignored: the first is kept."""
        with self._lock:
            self._pending.append((cause, event_id, envelope))
            self._pending_bytes += len(envelope)
            self._measure()
            if len(self._pending) >= self.cache or self._pending_bytes >= self.cache_bytes:
                self._flush()

    def loaded(self) -> None:
        """Everything is added: write what is left, count the causes."""
        with self._lock:
            self._flush()
            self._causes = self._file.causes()

    @property
    def empty(self) -> bool:
        """Nothing recorded (or closed): every ``get`` answers its default, without a query."""
        return not self._file.is_open

    def get(self, cause: str, default: Sequence[Envelope] = ()) -> Sequence[Envelope]:
        """The events published for ``cause``, in the order they were first published; else ``default``."""
        if not self._file.is_open:  # nothing recorded, or closed: no query
            return default
        with self._lock:
            if cause not in self._parsed:
                self._read([cause])
            found = self._parsed.get(cause)
            if found is None:  # closed meanwhile (a cause read alone is always kept)
                return default
            return found or default

    def prefetch(self, causes: Iterable[str]) -> None:
        """Read the events of ``causes`` (a batch's) from the file in as few queries as it takes;
        as many as the cache holds stay held (the others are read when they are looked up)."""
        if not self._file.is_open:
            return
        with self._lock:
            wanted = list(dict.fromkeys(c for c in causes if c not in self._parsed))[: self.cache]
            chunk = min(_CHUNK, self.cache)
            for start in range(0, len(wanted), chunk):
                if not self._read(wanted[start : start + chunk]):
                    return  # the cache is full of this batch's causes

    def items(self) -> Iterator[tuple[str, Sequence[Envelope]]]:
        """Every cause and its events, in the order of the causes' ids, a cause at a time (for
        inspection and tests: a rebuild looks causes up)."""
        after: str | None = None  # the cause before
        while True:
            with self._lock:
                if not self._file.is_open:
                    return
                after = self._file.cause_after(after)
                if after is None:
                    return
                events = tuple(decode_envelope(envelope) for envelope in self._file.envelopes(after))
            yield after, events

    def close(self) -> None:
        """Let the history go: its file is deleted; from now on nothing is recorded."""
        with self._lock:
            self._file.close()
            self._pending.clear()
            self._parsed.clear()
            self._pending_bytes = self._causes = 0

    # -- with the lock held -------------------------------------------------------------

    def _measure(self, reading: int = 0) -> None:
        self.peak = max(self.peak, self.held)
        self.peak_bytes = max(self.peak_bytes, self.held_bytes + reading)

    def _flush(self) -> None:
        if not self._pending:
            return
        self._file.write(self._pending)  # in the order read: the first copy of an event is kept
        self._pending.clear()
        self._pending_bytes = 0
        self._drop(0, 0)  # none is held while loading; if any, a cause may have gained events

    def _drop(self, causes: int, size: int) -> None:
        self._parsed.make_room(causes, size, self.cache, self.cache_bytes)

    def _read(self, causes: list[str]) -> bool:
        """Read ``causes`` into the cache, as many as fit in half of it (at least one); whether all did."""
        if not self._file.is_open or not causes:
            return True
        self.lookups += 1
        self._drop(len(causes), self.cache_bytes // 2)  # half of it for what is read now
        room = self.cache_bytes - self._parsed.bytes
        read: dict[str, tuple[tuple[Envelope, ...], int]] = {}
        events: list[Envelope] = []
        total, current, size, whole = 0, None, 0, True
        for cause, envelope in self._file.rows(causes):
            if cause != current:
                if current is not None:
                    read[current] = (tuple(events), size)
                    total += size
                    if total >= room:  # full: the causes not read yet are read when looked up
                        whole = False
                        break
                current, events, size = cause, [], 0
            events.append(decode_envelope(envelope))  # it was one when it was added
            size += len(envelope)
            self._measure(total + size)
        else:
            if current is not None:
                read[current] = (tuple(events), size)
            read |= {cause: ((), 0) for cause in causes if cause not in read}  # none recorded
        for cause, (found, size) in read.items():
            self._parsed.put(cause, found, size)
        self._measure()
        return whole
