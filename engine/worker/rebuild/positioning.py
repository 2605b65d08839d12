"""Where a rebuild re-reads from: a participant's consumer group moved there (only once the group
is empty), the end of its recorded history noted, and whether the group has caught up with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from engine.broker import kafka
from engine.ops import offsets
from engine.participant import Participant
from engine.worker.rebuild.state import RebuildState, Targets, decode, encode

log = logging.getLogger("engine.worker.rebuild")


async def position(bootstrap: str, state: RebuildState, participant: Participant, stop: asyncio.Event) -> bool:
    """Move ``participant``'s group to where its rebuild re-reads from (the row's ``start``, else the
    earliest records) and record where its history ends; False if stopped first.

    Only an empty group can be moved: while it has live members (an instance that has not
    noticed the loss yet) this waits, unless another instance positions it first."""
    said = False
    while not stop.is_set():
        row = (await asyncio.to_thread(state.rows)).get(participant.name)
        if row is None or row.targets is not None:
            return True
        try:
            _, members = await kafka.group_state(bootstrap, participant.name)
            if not members:
                if row.start is None:
                    moves = await offsets.plan_reset(bootstrap, [participant], earliest=True)
                else:
                    moves = [offsets.Move(participant.name, tp, None, at) for tp, at in decode(row.start).items()]
                await offsets.reset(bootstrap, moves)
                ends = await kafka.end_offsets(bootstrap, participant.topics)
                if await asyncio.to_thread(state.positioned, participant.name, encode(ends)):
                    where = row.start or "the earliest records"
                    log.info("%s: rebuilding: consumer group moved to %s", participant.name, where)
                    await _warn_if_truncated(bootstrap, participant, moves)
                continue
        except (offsets.GroupActive, KafkaError) as exc:  # a member joined meanwhile: look again
            log.info("%s: rebuilding: %s", participant.name, exc)
        if not said:
            log.warning("%s: rebuilding: waiting for the live members of its group to leave", participant.name)
            said = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return False


async def _warn_if_truncated(bootstrap: str, participant: Participant, moves: list[offsets.Move]) -> None:
    """Retention has deleted records a rebuild from the earliest would need: say so, loudly."""
    beginning = await kafka.beginning_offsets(bootstrap, [m.partition for m in moves])
    gone = {f"{tp.topic}[{tp.partition}]": at for tp, at in beginning.items() if at > 0}
    if gone and all(m.target <= beginning[m.partition] for m in moves):
        log.error(
            "%s: rebuilding: the topics no longer hold their first records (retention), up to %s: what they "
            "did is missing from the rebuilt state unless it was restored from a backup",
            participant.name, gone,
        )  # fmt: skip


async def caught_up(consumer: AIOKafkaConsumer, targets: Targets) -> bool:
    """Has ``consumer``'s group committed up to ``targets`` (or has retention left nothing before them)?"""
    ends = decode(targets)
    beginning = await consumer.beginning_offsets(list(ends))
    for tp, end in ends.items():
        committed = await consumer.committed(tp)
        if max(committed or 0, beginning.get(tp, 0)) < end:
            return False
    return True
