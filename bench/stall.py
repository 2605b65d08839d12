"""``pokesaga bench --stall-one``: does one saga's retrying step hold up the sagas beside it?

In one invocation, on one set of service processes with one set of settings: a run of N sagas,
undisturbed; then N more, with one saga published before them whose step (combat by default)
fails with a transient error for ``stall_seconds`` after its first attempt (``POKESAGA_STALL``)
and is retried meanwhile (that step's policy gets no attempt limit and at most 1 s between
tries, in both runs). Reported: the others' end-to-end percentiles in each run and the ratio of
their p99s, the same for the others whose key shares the stalled saga's partition, and when the
stalled saga ended and how. One JSON line.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.load import EASY, Options, Run, drive, e2e_figures, proc_figures, topology, workload
from capture.settings import Settings
from capture.starter import start_event

PREFIX = "stall-"  # every stalled saga's id starts with it (then the run's id)


def stall_env(settings: Settings, step: str, prefix: str, seconds: float) -> dict[str, str]:
    """The services' settings for the scenario: the stall, and a policy that outlasts it."""
    policies = {name: policy.model_dump(mode="json") for name, policy in settings.step_retry.items()}
    outlasting = settings.retry_policy(step, compensator=False).model_copy(
        update={"maximum_attempts": 0, "maximum_interval": 1.0}
    )
    policies[step] = outlasting.model_dump(mode="json")
    return {"POKESAGA_STALL": f"{step}={prefix}:{seconds:g}", "POKESAGA_STEP_RETRY": json.dumps(policies)}


def retries(ports: list[int], participant: str) -> int:
    """Handler attempts ``participant`` retried, over every process's /metrics."""
    total = 0.0
    for port in ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "pokesaga_retries_total" and sample.labels.get("participant") == participant:
                    total += sample.value
    return int(total)


def run_figures(run: Run, sagas: int) -> dict[str, Any]:
    return {
        "sagas": sagas,
        "sagas_per_s": round(len(run.latencies) / run.elapsed, 1) if run.elapsed else 0.0,
        "e2e_ms": e2e_figures(run.latencies),
        "outcomes": dict(run.outcomes),
    }


async def stall_one(settings: Settings, options: Options, data: Path) -> dict[str, Any]:
    """The undisturbed run and the stalled run, on the same services; their figures."""
    bootstrap = settings.bootstrap
    run_id = str(int(time.time() * 1000))
    prefix = f"{PREFIX}{run_id}-"
    env = stall_env(settings, options.stall_step, prefix, options.stall_seconds)
    async with topology(settings, options, False, data, env) as processes:
        if options.warmup:
            await drive(bootstrap, workload(options.warmup, options.failure_mix, f"w{run_id}"), options)
        undisturbed = await drive(bootstrap, workload(options.sagas, options.failure_mix, f"u{run_id}"), options)
        stalled_saga = start_event(f"{prefix}0", {"name": f"{prefix}0"}, EASY, source="pokesaga/bench")
        others = workload(options.sagas, options.failure_mix, f"s{run_id}")
        # Published first, so the others queue up on its partition behind it.
        stalled = await drive(bootstrap, others, options, lead=stalled_saga, lead_timeout=options.stall_seconds + 120)
        ports = [port for _, port in processes]
        retried = retries(ports, options.stall_step)
        per_process = {f"{p.target}#{i}": proc_figures(p) for i, (p, _) in enumerate(processes)}

    partition = stalled.partition_of[stalled_saga.sagaid]
    beside = [t for saga, t in stalled.latency_of.items() if stalled.partition_of.get(saga) == partition]
    base, disturbed = e2e_figures(undisturbed.latencies), e2e_figures(stalled.latencies)
    finished = round(stalled.lead_latency, 2) if stalled.lead_latency is not None else None
    if finished is None:
        print(f"pokesaga bench: the stalled saga {stalled_saga.sagaid} had no outcome", file=sys.stderr)
    elif finished < options.stall_seconds:
        print(
            f"pokesaga bench: the stalled saga ended after {finished}s, before its {options.stall_seconds:g}s stall "
            "was over: the services did not apply POKESAGA_STALL",
            file=sys.stderr,
        )
    return {
        "scenario": "stall-one",
        "step": options.stall_step,
        "stall_s": options.stall_seconds,
        "undisturbed": run_figures(undisturbed, options.sagas),
        "stalled": run_figures(stalled, options.sagas)
        | {"same_partition": {"sagas": len(beside), "e2e_ms": e2e_figures(beside)}},
        "p99_ratio": round(disturbed["p99"] / base["p99"], 2) if base["p99"] else None,
        "stalled_saga": {
            "saga_id": stalled_saga.sagaid,
            "partition": partition,
            "outcome": stalled.lead.type if stalled.lead else None,
            "detail": stalled.lead.detail if stalled.lead else None,
            "finished_after_s": finished,
            "others_done_after_s": round(stalled.elapsed, 2),
            "retries": retried,
        },
        "processes": per_process,
    }
