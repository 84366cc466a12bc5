"""The detection suite: every scenario in ``benchmarks/scenarios``, every policy, on the same traffic.

``sequential`` is the rollout judge itself (``canary.analysis.loop``); the incumbents' policies
replay the same traffic (open-loop scenarios).  Prints a table per scenario, then one JSON object:
all results, the issue's goals with the measured value and whether each is met, and ratios of ours
against Flagger's documented settings on the headline scenario (``ttr_ratio`` = flagger's median
time to rollback / ours, ``failed_ratio`` = flagger's median failed canary requests / ours), and
``headline_bound``: what a test that knows the canary's ratio reaches on the headline's traffic,
and ``mirror_router_rule``: the mirror judged on the router's own counts (``benchmarks.mirror_noise``).
``--runs N`` caps the runs per scenario (quicker, wider intervals).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks import headline_bound, mirror_noise
from benchmarks.common import report
from canary.analysis import loop, simulate
from canary.analysis.mirror import MirrorState
from canary.analysis.scenario import Scenario
from canary.analysis.spec import JudgeSpec

SCENARIOS = Path(__file__).parent / "scenarios"
ROOT = Path(__file__).parent.parent


def load(path: Path) -> Scenario:
    def read_spec(name: str) -> Any:
        return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))

    return Scenario.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), read_spec)


def mirror_figures(runs: int, seed: int = 3) -> dict[str, float]:
    """Healthy canary with a field that differs 1% of the time on stable-vs-baseline too; resizer 2.0
    (a quarter of the photos sideways, no noise): how often each passes, and after how many answers."""
    spec = JudgeSpec.from_mapping(
        {
            "steps": [{"weight": 5}],
            "metrics": [{"name": "errors"}, {"name": "slow", "kind": "latency"}],
            "mirror": {"min_compared": 200, "min_seconds": 30, "max_seconds": 600},
        }
    )
    tests = 3  # two metrics and the mirror share the rollout's alpha
    rng = np.random.default_rng(seed)

    def run(canary: float, noise: float, per_second: int = 5) -> tuple[np.ndarray, np.ndarray]:
        state = MirrorState.new(runs)
        code = np.zeros(runs, dtype=np.int64)
        at = np.full(runs, np.nan)
        n = np.full(runs, float(per_second))
        for _ in range(600):
            state.update_arrays(
                n,
                rng.binomial(per_second, canary, runs) * 1.0,
                n,
                rng.binomial(per_second, noise, runs) * 1.0,
                np.ones(runs),
                1e-3,
            )
            new = state.codes(spec, tests)
            first = (code == 0) & (new != 0)
            at = np.where(first, state.compared, at)
            code = np.where(code == 0, new, code)
        return code, at

    healthy, _ = run(0.01, 0.01)
    broken, at = run(0.25, 0.0)
    return {
        "mirror_noise_1pct_pass_share": round(float((healthy == 1).mean()), 4),
        "mirror_orientation_caught_share": round(float((broken == 2).mean()), 4),
        "mirror_orientation_compared_p90": round(float(np.nanquantile(at, 0.9)), 1),
    }


def per_request_on_sticky(path: Path, runs: int) -> float:
    """The reference: the request-level test (the old null) on the same sticky traffic."""
    scenario = load(path)
    spec = dataclasses.replace(loop.judge_spec(scenario), sticky=False)
    result = loop.run(scenario, runs, np.random.default_rng(scenario.seed), spec)
    return float((~np.isnan(result.rolled_back_at)).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, help="at most this many runs per scenario")
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for path in sorted(SCENARIOS.glob("*.yaml")):
        scenario = load(path)
        t0 = time.perf_counter()
        runs = min(scenario.runs, args.runs) if args.runs else scenario.runs
        result = simulate.run(scenario, runs=runs)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        results[result["scenario"]] = result
        print(simulate.table(result), f"\n  ({result['seconds']} s)\n", flush=True)
    mirror = mirror_figures(min(1000, args.runs or 1000))
    router_mirror = mirror_noise.figures(min(1000, args.runs or 1000))
    old_sticky = per_request_on_sticky(SCENARIOS / "healthy-customers.yaml", min(200, args.runs or 200))

    def seq(name: str) -> dict[str, Any]:
        return dict(results[name]["policies"]["sequential"])

    head, flag = seq("headline"), results["headline"]["policies"]["flagger"]
    healthy = {n: r["policies"]["sequential"] for n, r in results.items() if r["healthy"]}
    worse = [
        seq(n)["missed_share"]
        for n in ("rollout-per-request-2x", "rollout-importer-2x", "rollout-sticky-2x", "rollout-sticky-2x-history")
    ]
    late = seq("late-onset")["ttr_median_s"] - 900
    goals: dict[str, tuple[float, bool]] = {
        "healthy_false_rollback<=1%": (
            max(h["false_rollback_rate"] for h in healthy.values()),
            all(h["false_rollback_rate"] <= 0.01 for h in healthy.values()),
        ),
        "healthy_false_rollback_upper95<=2%": (
            max(h["false_rollback_upper95"] for h in healthy.values()),
            all(h["false_rollback_upper95"] <= 0.02 for h in healthy.values()),
        ),
        "min_regression_worse_promoted<=5%": (max(worse), max(worse) <= 0.05),
        "headline_ttr_median_s<=8": (head["ttr_median_s"], head["ttr_median_s"] <= 8),
        "headline_ttr_p90_s<=20": (head["ttr_p90_s"], head["ttr_p90_s"] <= 20),
        "headline_failed_mean<=2.5": (head["failed_mean"], head["failed_mean"] <= 2.5),
        "low_traffic_ttr_median_s<=420": (
            seq("low-traffic")["ttr_median_s"],
            seq("low-traffic")["ttr_median_s"] <= 420,
        ),
        "late_onset_median_s_after_onset<=40": (late, late <= 40),
        "latency_shift_30pct_caught_in_5min>=90%": (
            seq("latency-shift")["rolled_back_share"],
            seq("latency-shift")["rolled_back_share"] >= 0.9,
        ),
        "mirror_noise_1pct_passes>=99%": (
            mirror["mirror_noise_1pct_pass_share"],
            mirror["mirror_noise_1pct_pass_share"] >= 0.99,
        ),
        "mirror_router_rule_noisy_json_passes>=99%": (
            router_mirror["healthy_pass_share"],
            router_mirror["healthy_pass_share"] >= 0.99,
        ),
        "mirror_orientation_caught_within_100_compared": (
            mirror["mirror_orientation_compared_p90"],
            mirror["mirror_orientation_caught_share"] == 1.0 and mirror["mirror_orientation_compared_p90"] <= 100,
        ),
    }
    report(
        {
            "name": "detection",
            "scenarios": len(results),
            "seconds": round(time.perf_counter() - started, 1),
            "ttr_ratio": round(flag["ttr_median_s"] / head["ttr_median_s"], 1),
            "failed_ratio": round(flag["failed_median"] / max(head["failed_median"], 1), 1),
            # false rollbacks of identical releases under sticky customers: ours / the request-level test's
            "sticky_false_rollback": seq("healthy-customers")["false_rollback_rate"],
            "sticky_false_rollback_per_request_test": round(old_sticky, 4),
            "sticky_false_rollback_ratio": round(
                seq("healthy-customers")["false_rollback_rate"] / max(old_sticky, 1e-9), 4
            ),
            "goals": {k: {"value": round(float(v), 4), "met": bool(ok)} for k, (v, ok) in goals.items()},
            "mirror": mirror,
            "mirror_router_rule": router_mirror,  # the router's counting rule (benchmarks.mirror_noise)
            # the best any burst-proof test can do on the headline (benchmarks.headline_bound)
            "headline_bound": headline_bound.measure(),
            "results": {n: r["policies"] for n, r in results.items()},
        }
    )


if __name__ == "__main__":
    main()
