"""``pokesaga bench --secure`` and ``--compare-secure``: what TLS and SASL cost.

The workload runs as a user would deploy it on a secured broker: a private broker of
``pokesaga kafka start --secure``'s kind (engine.local.broker.secured_kafka: a SASL_SSL listener,
SCRAM-SHA-512, Kafka's standard authorizer), the ACLs ``pokesaga acls`` derives from the
declaration applied, each service under its own principal over TLS, the driver as ``starter``.
``--compare-secure`` first runs the same workload through the same broker's PLAINTEXT listener
(on loopback, the administrator's: no TLS, no SASL, its principal a super user), each run with new
databases of the same kind, and prints the secured run's figures, the plaintext run's, and their
ratios: one machine, one broker process, one workload; what differs is what the security does.
Before both, an untimed run of the secured topology warms the new broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.load import Access, Options, bench, measure
from capture.saga import CAPTURE
from capture.settings import SERVICES, Settings
from engine.broker import security
from engine.local.broker import secured_kafka
from engine.local.secured import SCRAM
from engine.ops import acls

DRIVER = acls.STARTER  # the driver starts sagas and reads their outcomes: the starter's rights, no more
COMPARED = ("sagas_per_s", "e2e_ms", "cpu_ms_per_saga", "broker_cpu_ms_per_saga", "steps", "processes", "outcomes")


@contextlib.contextmanager
def secured_broker(settings: Settings, state: Path, partitions: int) -> Iterator[tuple[str, Access]]:
    """A private secured broker in ``state``, its topics made and the declaration's ACLs applied;
    yields the administrator's address (its PLAINTEXT listener), how the driver and each service
    reach it as themselves. Stopped after."""
    rules = acls.derive(CAPTURE)
    names = [p.removeprefix("User:") for p in acls.principals(rules)]
    local, listener = secured_kafka(settings.kafka_cache_dir, names, state=state)
    admin = local.start()
    try:
        asyncio.run(acls.apply(admin, rules, CAPTURE.all_topics(), partitions))
        security.secure(
            listener.settings(DRIVER, settings)
        )  # this process's clients of the secured listener: the driver's
        described = {"protocol": "SASL_SSL", "sasl_mechanism": SCRAM[0], "acls": len(rules),
                     "principals": [*SERVICES, DRIVER]}  # fmt: skip
        each = {s: listener.environment(s) for s in SERVICES}
        yield admin, Access(listener.address, each, described, local.pid())
    finally:
        local.stop()


async def secured(settings: Settings, options: Options, data: Path, access: Access) -> dict[str, Any]:
    """The secured run's figures; with ``compare_secure``, after the plaintext run's, and their ratios.
    ``settings.bootstrap``: the broker's PLAINTEXT listener."""
    plain, described = None, {"security": dict(access.security)}
    if options.compare_secure:
        # A new broker runs the same workload faster the second time (its JIT: measured 1.4-1.9x the
        # sagas/s, half the broker's CPU a saga): whichever ran first would look the dearer. So a run
        # of the secured topology, not timed, warms it first; then plaintext, then secured, timed.
        await measure(settings.model_copy(update={"data_dir": data / "warm-up"}), options, False,
                      data / "warm-up", access)  # fmt: skip
        through = Access(settings.bootstrap, broker_pid=access.broker_pid)  # the administrator's listener
        plain = await measure(settings.model_copy(update={"data_dir": data / "plaintext"}), options, False,
                              data / "plaintext", through)  # fmt: skip
    figures = await measure(settings.model_copy(update={"data_dir": data / "secured"}), options, False,
                            data / "secured", access)  # fmt: skip
    if plain is None:
        return described | figures
    figures["plaintext"] = {k: plain[k] for k in COMPARED}
    figures["ratio_to_plaintext"] = ratios(figures, plain)
    return described | figures


def ratios(secured: dict[str, Any], plain: dict[str, Any]) -> dict[str, float | None]:
    """The secured run's figures over the plaintext run's: throughput (below 1: the security costs
    that share), latency percentiles, the services' and the broker's CPU a saga (above 1: that much
    longer, or more)."""

    def over(ours: float, theirs: float) -> float | None:
        return round(ours / theirs, 3) if theirs else None

    found = {"sagas_per_s": over(secured["sagas_per_s"], plain["sagas_per_s"])}
    found |= {q: over(secured["e2e_ms"][q], plain["e2e_ms"][q]) for q in ("p50", "p95", "p99")}
    for cpu in ("cpu_ms_per_saga", "broker_cpu_ms_per_saga"):
        found[cpu] = over(secured[cpu], plain[cpu])
    return found


def run(settings: Settings, options: Options) -> int:
    """A private secured broker, the bench on it (and on its plaintext listener), one JSON line."""
    with (
        tempfile.TemporaryDirectory(prefix="pokesaga-bench-secured-") as state,
        secured_broker(settings, Path(state), options.partitions) as (admin, access),
    ):
        print(f"pokesaga bench: private secured broker at {access.driver} (its plaintext listener: {admin})",
              file=sys.stderr)  # fmt: skip
        live = settings.model_copy(update={"kafka_bootstrap_servers": admin})
        figures = asyncio.run(bench(live, options, False, False, access))
    print(json.dumps(figures, sort_keys=False))
    return 0
