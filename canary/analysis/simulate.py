"""``canary simulate``: replay rollback policies on simulated traffic and summarise what they did.

``sequential`` is the rollout judge itself (``canary.analysis.loop`` runs
``canary.analysis.rollout`` over many runs); the incumbents' policies (``canary.analysis.policies``)
replay the same traffic afterwards (open loop only: in a closed loop the traffic depends on who
decides).  Runs are drawn in chunks (bounded memory).  The summary per policy: share of runs rolled
back, time to rollback (median, p90, over runs rolled back), canary bad events served before it
(median, p90, mean), and for a healthy canary the false-rollback rate (every rollback, whatever
decided it) with the upper end of its 95% Wilson interval; with ``rollout:`` also the shares
promoted, inconclusive, and for a worse canary ``missed_share`` (promoted while worse).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from canary.analysis import loop
from canary.analysis.intervals import upper_bound
from canary.analysis.policies import POLICIES
from canary.analysis.scenario import Scenario

CHUNK_CELLS = 400_000  # runs x seconds per chunk
POLICY_NAMES = ("sequential", *POLICIES)


def run(
    scenario: Scenario, policies: Sequence[str] | None = None, runs: int | None = None, seed: int | None = None
) -> dict[str, Any]:
    closed = scenario.rollout is not None
    names = list(policies or (["sequential"] if closed else POLICY_NAMES))
    unknown = [p for p in names if p not in POLICY_NAMES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}: choose from {', '.join(POLICY_NAMES)}")
    if closed and names != ["sequential"]:
        raise ValueError("a closed-loop scenario (rollout:) runs the sequential policy only")
    runs = runs or scenario.runs
    rng = np.random.default_rng(scenario.seed if seed is None else seed)
    chunk = max(1, CHUNK_CELLS // scenario.duration)
    parts: dict[str, list[dict[str, np.ndarray]]] = {p: [] for p in ["sequential", *names]}
    done = 0
    while done < runs:
        size = min(chunk, runs - done)
        result = loop.run(scenario, size, rng)
        parts["sequential"].append(
            {
                "ttr": result.rolled_back_at,
                "failed": np.where(np.isnan(result.rolled_back_at), np.nan, result.failed),
                "promoted": ~np.isnan(result.promoted_at),
                "inconclusive": result.inconclusive,
            }
        )
        tr = result.traffic
        if tr is not None:
            cum_bad = np.cumsum(tr.canary_bad, axis=1)
            for name in names:
                if name == "sequential":
                    continue
                seconds = POLICIES[name](tr, scenario)
                rolled = ~np.isnan(seconds)
                at = np.where(rolled, seconds, scenario.duration).astype(np.int64) - 1
                served = cum_bad[np.arange(size), np.clip(at, 0, scenario.duration - 1)]
                parts[name].append({"ttr": seconds, "failed": np.where(rolled, served, np.nan)})
        done += size
    summaries = {}
    for p in names:
        joined = {k: np.concatenate([part[k] for part in parts[p]]) for k in parts[p][0]}
        summaries[p] = _summary(joined, scenario, closed and p == "sequential")
    return {"scenario": scenario.name, "runs": runs, "healthy": scenario.healthy, "policies": summaries}


def _summary(d: dict[str, np.ndarray], scenario: Scenario, closed: bool) -> dict[str, float | None]:
    ttr, failed = d["ttr"], d["failed"]
    rolled = ~np.isnan(ttr)
    n = len(ttr)
    k = int(rolled.sum())

    def q(values: np.ndarray, p: float) -> float | None:
        return None if not k else round(float(np.quantile(values[rolled], p)), 1)

    out: dict[str, float | None] = {
        "rolled_back_share": round(k / n, 4),
        "ttr_median_s": q(ttr, 0.5),
        "ttr_p90_s": q(ttr, 0.9),
        "failed_median": q(failed, 0.5),
        "failed_p90": q(failed, 0.9),
        "failed_mean": None if not k else round(float(np.mean(failed[rolled])), 2),
        "false_rollback_rate": round(k / n, 4) if scenario.healthy else None,
        "false_rollback_upper95": round(upper_bound(k, n), 4) if scenario.healthy else None,
    }
    if closed:
        promoted = int(d["promoted"].sum())
        out["promoted_share"] = round(promoted / n, 4)
        out["inconclusive_share"] = round(float(d["inconclusive"].mean()), 4)
        out["missed_share"] = None if scenario.healthy else round(promoted / n, 4)
    return out


def table(result: dict[str, Any]) -> str:
    head = f"{result['scenario']}  ({result['runs']} runs, canary {'healthy' if result['healthy'] else 'faulty'})"
    cols = ("policy", "rolled back", "ttr p50", "ttr p90", "failed p50", "failed p90", "false rb (95% up)", "promoted")
    rows = [cols]
    for name, s in result["policies"].items():
        false = (
            "-"
            if s["false_rollback_rate"] is None
            else (f"{s['false_rollback_rate']:.2%} ({s['false_rollback_upper95']:.2%})")
        )
        promoted = "-" if "promoted_share" not in s else f"{s['promoted_share']:.1%}"
        rows.append(
            (
                name,
                f"{s['rolled_back_share']:.1%}",
                _s(s["ttr_median_s"], "s"),
                _s(s["ttr_p90_s"], "s"),
                _s(s["failed_median"]),
                _s(s["failed_p90"]),
                false,
                promoted,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _s(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"
