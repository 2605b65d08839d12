"""Reset a service's committed offsets, like ``kafka-consumer-groups --reset-offsets``: ``plan_reset``
says where each partition would go, ``reset`` moves them (the command ``pokesaga replay``).

On restart the service reprocesses from there. The inbox makes that harmless over a
healthy database, and a database lost with its service, or restored from a backup, is
rebuilt from the records (``pokesaga replay`` marks the rebuild first: engine.worker.rebuild).
A reset is not a dead letter's republish (engine.ops.deadletters).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import TopicPartition

from engine.broker import kafka
from engine.participant import Participant


class GroupActive(Exception):
    """The group has live members: offsets can only be moved while its service is stopped."""


@dataclass(frozen=True)
class Move:
    group: str
    partition: TopicPartition
    current: int | None  # None: nothing committed yet
    target: int

    def __str__(self) -> str:
        current = "-" if self.current is None else str(self.current)
        tp = f"{self.partition.topic}[{self.partition.partition}]"
        return f"{self.group:<24} {tp:<22} {current:>8} -> {self.target}"


async def plan_reset(
    bootstrap: str,
    participants: list[Participant],
    earliest: bool = False,
    when: datetime | None = None,
    offset: int | None = None,
) -> list[Move]:
    """Where each partition of each participant's group would be moved."""
    moves: list[Move] = []
    for participant in participants:
        tps = [TopicPartition(t, p) for t in participant.topics for p in await kafka.partition_ids(bootstrap, t)]
        consumer = kafka.consumer(bootstrap, participant.name)
        await consumer.start()
        try:
            begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
            found = await consumer.offsets_for_times({tp: int(when.timestamp() * 1000) for tp in tps}) if when else {}
            for tp in tps:
                if earliest:
                    target = begin[tp]
                elif when is not None:
                    at = found.get(tp)
                    target = at.offset if at is not None else end[tp]
                else:
                    target = min(max(offset or 0, begin[tp]), end[tp])
                committed = await consumer.committed(tp)
                moves.append(Move(participant.name, tp, committed, target))
        finally:
            await consumer.stop()
    return moves


async def check_stopped(bootstrap: str, groups: Iterable[str]) -> None:
    """``GroupActive`` if one of ``groups`` has live members."""
    for group in sorted(set(groups)):
        _state, members = await kafka.group_state(bootstrap, group)
        if members:
            raise GroupActive(f"consumer group {group!r} has {members} live member(s): stop the service first")


async def reset(bootstrap: str, moves: list[Move]) -> None:
    """Commit the planned offsets, group by group; refuses if a group has live members."""
    groups = sorted({m.group for m in moves})
    await check_stopped(bootstrap, groups)
    for group in groups:
        await kafka.commit_offsets(bootstrap, group, {m.partition: m.target for m in moves if m.group == group})
