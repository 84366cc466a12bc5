"""The detection suite: every scenario in ``benchmarks/scenarios``, every policy, on the same traffic.

Prints a table per scenario, then one JSON object: all results, the issue's targets with the
measured value and whether it is met, and ratios of ours against Flagger's documented settings on
the headline scenario (``ttr_ratio`` = flagger's median time to rollback / ours, ``failed_ratio``
= flagger's median failed canary requests / ours).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import report
from canary.analysis import simulate
from canary.analysis.scenario import Scenario

SCENARIOS = Path(__file__).parent / "scenarios"


def load(path: Path) -> Scenario:
    return Scenario.from_dict(yaml.safe_load(path.read_text()))


def main() -> None:
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for path in sorted(SCENARIOS.glob("*.yaml")):
        t0 = time.perf_counter()
        result = simulate.run(load(path))
        result["seconds"] = round(time.perf_counter() - t0, 2)
        results[result["scenario"]] = result
        print(simulate.table(result), f"\n  ({result['seconds']} s)\n", flush=True)
    five = dataclasses.replace(load(SCENARIOS / "ratio-5x-base-0.001.yaml"), duration=900, name="5x-within-15min")
    within = simulate.run(five, ["sequential"])["policies"]["sequential"]["rolled_back_share"]

    def seq(name: str) -> dict[str, Any]:
        policies: dict[str, Any] = results[name]["policies"]
        return dict(policies["sequential"])

    head, flag = seq("headline"), results["headline"]["policies"]["flagger"]
    healthy = {n: r["policies"]["sequential"] for n, r in results.items() if r["healthy"]}
    targets = {
        "headline_ttr_median_s<=15": [head["ttr_median_s"], head["ttr_median_s"] <= 15],
        "headline_ttr_p90_s<=30": [head["ttr_p90_s"], head["ttr_p90_s"] <= 30],
        "headline_failed_p90<=6": [head["failed_p90"], head["failed_p90"] <= 6],
        "headline_10x_faster_than_flagger": [
            flag["ttr_median_s"] / head["ttr_median_s"],
            flag["ttr_median_s"] / head["ttr_median_s"] >= 10,
        ],
        "headline_10x_fewer_failed_than_flagger": [
            flag["failed_median"] / max(head["failed_median"], 1),
            flag["failed_median"] / max(head["failed_median"], 1) >= 10,
        ],
        "total_break_ttr_p90_s<=10": [seq("total-break")["ttr_p90_s"], seq("total-break")["ttr_p90_s"] <= 10],
        "5x_at_0.1%_caught_within_15min>=90%": [within, within >= 0.9],
        "healthy_false_rollback<=1%": [
            max(h["false_rollback_rate"] for h in healthy.values()),
            all(h["false_rollback_rate"] <= 0.01 for h in healthy.values()),
        ],
        "healthy_false_rollback_upper95<=1.5%": [
            max(h["false_rollback_upper95"] for h in healthy.values()),
            all(h["false_rollback_upper95"] <= 0.015 for h in healthy.values()),
        ],
    }
    report(
        {
            "name": "detection",
            "scenarios": len(results),
            "seconds": round(time.perf_counter() - started, 1),
            "ttr_ratio": round(flag["ttr_median_s"] / head["ttr_median_s"], 1),
            "failed_ratio": round(flag["failed_median"] / max(head["failed_median"], 1), 1),
            "targets": {k: {"value": round(float(v[0]), 4), "met": bool(v[1])} for k, v in targets.items()},
            "results": {n: r["policies"] for n, r in results.items()},
        }
    )


if __name__ == "__main__":
    main()
