"""Rebuilding a participant's state from the topics, as a durable state of its database.

When a service's database is lost, re-reading its input topics rebuilds the state, but the
order in which partitions interleave may differ from the first time, and a decision that
depends on state shared across sagas (a stock, a capacity) could come out otherwise. So a
rebuilding participant first loads what it published before (its **history**), indexed by the
id of the event that caused it, and a handler with a recorded decision takes that decision
again instead of deciding anew: the rebuilt state and the re-published events are the same.
The history is kept on disk, not in memory: however much the topics hold, a rebuild holds a
bounded part of it in memory, the batches in hand (engine.worker.history).

**When.** A participant is rebuilding while its service's database has a row for it in the
``rebuild`` table: from the moment its state is lost or restored to the moment it has re-applied
its recorded history. The row is written where the loss is seen, so no way of starting misses it:

- a database created empty (by a service's start or ``pokesaga db upgrade``) gets a ``'*'`` row
  in the transaction that creates its tables; the first process to start expands it into one
  row per participant of the service and rewinds their consumer groups to the earliest records;
- ``pokesaga replay`` (after a restore from a backup, or a loss) writes the rows of the groups
  whose offsets it resets, with where each re-reads from (``start``), before it moves the offsets
  (engine.ops.offsets): a reset interrupted in between is finished by the service, which moves
  its group there itself. It never re-reads from after the first record the database had not
  applied (``restore_start``);
- a database replaced under a running service (its tables gone, a SQLite file restored in place)
  makes the participant leave its group and start again, as if restarted (engine.worker.run).

Each row holds **targets**: the end of every input partition when the rebuild began. Every
record before them that has a recorded decision is re-applied; a record without one — one that
queued during the outage — is **parked** (engine.store.parked), and so is every later record of its
saga. When a participant's group has committed past its targets, its row is marked rebuilt (the
column ``replayed``). A compensator starts only once its step is rebuilt (a compensation re-applied
before the step it undoes would find nothing to undo); the step waits for its compensator in turn.
When every participant of the service is rebuilt, the rows are deleted in one transaction and the
participants apply the parked records, in arrival order, on the rebuilt state: the state before
the loss plus the queued sagas' effects, whatever the partition interleaving, and every saga keeps
exactly one outcome. What it publishes again for a recorded decision is not re-sent (it is on the
topics already); a recorded decision that cannot be applied again is a dead letter
(``rebuild_conflict``), never a second outcome. Instances share the rows, so a second
instance, a restart or a crash in the middle of a rebuild carries it on from where it is.

Any client can write anything to the topics: a record that is not an envelope the services
take (any bytes, JSON nested thousands of levels deep, a record the client cannot read as
written) is skipped, and the count of them logged; it never stops a rebuild.

The parts, each a module here: ``state`` (the rows in the database), ``positioning`` (moving a
group to where its rebuild re-reads from, and seeing it caught up), ``recorded`` (loading the
recorded decisions from the topics) and ``progress`` (``Rebuild``: one participant's side, as its
loop runs it). What is recorded is kept on disk by engine.worker.history.
"""

from engine.worker.history import History
from engine.worker.rebuild.positioning import caught_up, position
from engine.worker.rebuild.progress import Rebuild
from engine.worker.rebuild.recorded import load
from engine.worker.rebuild.state import (
    CREATED,
    RebuildRequired,
    RebuildState,
    Row,
    Start,
    Targets,
    decode,
    encode,
    mark_created,
    restore_start,
)

__all__ = [
    "CREATED",
    "History",
    "Rebuild",
    "RebuildRequired",
    "RebuildState",
    "Row",
    "Start",
    "Targets",
    "caught_up",
    "decode",
    "encode",
    "load",
    "mark_created",
    "position",
    "restore_start",
]
