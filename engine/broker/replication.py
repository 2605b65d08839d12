"""How many copies of each topic: what "acknowledged" survives.

Every topic pokesaga creates gets ``replication_factor`` replicas (unset: one per broker the
cluster has, at most 3) and ``min.insync.replicas`` one less (see engine.broker.kafka.topic_configs):
with acks=all, a record acknowledged is on two brokers at least, and survives the loss of one
with its disk. A topic that already exists with fewer replicas than that was made by someone
else (an older pokesaga, a script, a broker's auto-creation): a service will not run on it,
since the safety the setting promises is not there, unless ``accept_under_replicated`` says to.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from engine.broker import kafka
from engine.settings import Settings

log = logging.getLogger(__name__)
_said: set[str] = set()  # topics accepted under-replicated, said once per process


class UnderReplicated(Exception):
    """Existing topics hold fewer replicas than the setting asks; the message is one line."""

    def __init__(self, short: dict[str, int], wanted: int) -> None:
        self.short, self.wanted = short, wanted
        listed = ", ".join(f"{topic} ({n})" for topic, n in sorted(short.items()))
        super().__init__(
            f"POKESAGA_REPLICATION_FACTOR: {len(short)} topic(s) have fewer than {wanted} replicas: {listed}; "
            "add replicas (kafka-reassign-partitions), or set POKESAGA_ACCEPT_UNDER_REPLICATED=true to run anyway"
        )


async def ensure_replicated(settings: Settings, names: Iterable[str]) -> int:
    """Create the missing topics among ``names``, replicated, and refuse_under_replicated; returns
    the replication wanted."""
    names = list(names)
    wanted = await kafka.ensure_topics(
        settings.bootstrap, names, settings.partitions, replication=settings.replication_factor
    )
    await refuse_under_replicated(settings, names, wanted)
    return wanted


async def refuse_under_replicated(settings: Settings, names: Iterable[str], wanted: int) -> None:
    """Raise UnderReplicated when a topic among ``names`` exists with fewer than ``wanted``
    replicas, unless the settings accept it (then say so, once, as a warning)."""
    short = {t: n for t, n in (await kafka.replication_of(settings.bootstrap, names)).items() if n < wanted}
    if short:
        refused = UnderReplicated(short, wanted)
        if not settings.accept_under_replicated:
            raise refused
        if not short.keys() <= _said:
            _said.update(short)
            log.warning("running anyway (POKESAGA_ACCEPT_UNDER_REPLICATED): %s", str(refused).split(": ", 1)[1])
