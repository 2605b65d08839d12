"""``pokesaga bench --compare-secure``'s ratios: the secured run's figures over the plaintext run's."""

from __future__ import annotations

from typing import Any

from bench.secure import ratios


def figures(sagas_per_s: float, p50: float, cpu: float, broker_cpu: float) -> dict[str, Any]:
    e2e = {"p50": p50, "p95": p50 * 2, "p99": p50 * 3, "max": p50 * 4}
    return {"sagas_per_s": sagas_per_s, "e2e_ms": e2e, "cpu_ms_per_saga": cpu, "broker_cpu_ms_per_saga": broker_cpu}


def test_each_ratio_is_the_secured_figure_over_the_plaintext_one() -> None:
    found = ratios(figures(80, 30, 1.2, 0.9), figures(100, 20, 1.0, 0.6))
    assert found == {
        "sagas_per_s": 0.8, "p50": 1.5, "p95": 1.5, "p99": 1.5, "cpu_ms_per_saga": 1.2, "broker_cpu_ms_per_saga": 1.5
    }  # fmt: skip


def test_a_figure_that_was_zero_on_plaintext_has_no_ratio_rather_than_a_division_by_zero() -> None:
    found = ratios(figures(80, 30, 1.2, 0.9), figures(100, 20, 0.0, 0.0))
    assert found["cpu_ms_per_saga"] is None and found["broker_cpu_ms_per_saga"] is None
    assert found["sagas_per_s"] == 0.8
