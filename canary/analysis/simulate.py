"""``canary simulate``: replay rollback policies on simulated traffic and summarise what they did.

Runs are drawn in chunks (bounded memory), every policy sees the same traffic, and the summary per
policy is: share of runs rolled back, time to rollback (median, p90, over runs rolled back), canary
bad events served before the rollback (median, p90), and for scenarios where the canary is no
worse, the false-rollback rate with the upper end of its 95% Wilson interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from canary.analysis.intervals import upper_bound
from canary.analysis.policies import POLICIES
from canary.analysis.scenario import Scenario, traffic

CHUNK_CELLS = 2_000_000  # runs x seconds per chunk: keeps the (x9 ratios) arrays to a few hundred MB


def run(
    scenario: Scenario, policies: Sequence[str] | None = None, runs: int | None = None, seed: int | None = None
) -> dict[str, Any]:
    names = list(policies or POLICIES)
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}: choose from {', '.join(POLICIES)}")
    runs = runs or scenario.runs
    rng = np.random.default_rng(scenario.seed if seed is None else seed)
    chunk = max(1, CHUNK_CELLS // scenario.duration)
    ttr: dict[str, list[np.ndarray]] = {p: [] for p in names}
    failed: dict[str, list[np.ndarray]] = {p: [] for p in names}
    done = 0
    while done < runs:
        size = min(chunk, runs - done)
        tr = traffic(scenario, size, rng)
        cum_bad = np.cumsum(tr.canary_bad, axis=1)
        for name in names:
            seconds = POLICIES[name](tr, scenario)
            rolled = ~np.isnan(seconds)
            at = np.where(rolled, seconds, scenario.duration).astype(np.int64) - 1
            served_bad = cum_bad[np.arange(size), np.clip(at, 0, scenario.duration - 1)]
            ttr[name].append(seconds)
            failed[name].append(np.where(rolled, served_bad, np.nan))
        done += size
    return {
        "scenario": scenario.name,
        "runs": runs,
        "healthy": scenario.healthy,
        "policies": {p: _summary(np.concatenate(ttr[p]), np.concatenate(failed[p]), scenario) for p in names},
    }


def _summary(ttr: np.ndarray, failed: np.ndarray, scenario: Scenario) -> dict[str, float | None]:
    rolled = ~np.isnan(ttr)
    n = len(ttr)
    k = int(rolled.sum())

    def q(values: np.ndarray, p: float) -> float | None:
        return None if not k else round(float(np.quantile(values[rolled], p)), 1)

    return {
        "rolled_back_share": round(k / n, 4),
        "ttr_median_s": q(ttr, 0.5),
        "ttr_p90_s": q(ttr, 0.9),
        "failed_median": q(failed, 0.5),
        "failed_p90": q(failed, 0.9),
        "false_rollback_rate": round(k / n, 4) if scenario.healthy else None,
        "false_rollback_upper95": round(upper_bound(k, n), 4) if scenario.healthy else None,
    }


def table(result: dict[str, Any]) -> str:
    head = f"{result['scenario']}  ({result['runs']} runs, canary {'healthy' if result['healthy'] else 'faulty'})"
    cols = ("policy", "rolled back", "ttr p50", "ttr p90", "failed p50", "failed p90", "false rb (95% up)")
    rows = [cols]
    for name, s in result["policies"].items():
        false = (
            "-"
            if s["false_rollback_rate"] is None
            else (f"{s['false_rollback_rate']:.2%} ({s['false_rollback_upper95']:.2%})")
        )
        rows.append(
            (
                name,
                f"{s['rolled_back_share']:.1%}",
                _s(s["ttr_median_s"], "s"),
                _s(s["ttr_p90_s"], "s"),
                _s(s["failed_median"]),
                _s(s["failed_p90"]),
                false,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _s(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"
