"""The judge's guarantees, checked by simulation with fixed seeds through the simulator's loop (the
same code the controller's judge runs): sticky customers, restarts, several metrics, timeouts,
the pass rule, late onset, latency on the whole histogram."""

from __future__ import annotations

import dataclasses

import numpy as np

from canary.analysis import loop, simulate
from canary.analysis.scenario import Scenario
from canary.analysis.spec import JudgeSpec

HEALTHY = {
    "name": "t",
    "duration": 600,
    "rate": 100,
    "canary_share": 0.05,
    "baseline_error_rate": 0.01,
    "canary_error_rate": 0.01,
    "runs": 200,
    "seed": 3,
}


def rolled_back(scenario: Scenario, runs: int, seed: int, spec: JudgeSpec | None = None) -> float:
    result = loop.run(scenario, runs, np.random.default_rng(seed), spec)
    return float((~np.isnan(result.rolled_back_at)).mean())


def test_sticky_customers_who_differ_keep_the_false_rollback_bound_where_the_request_test_breaks():
    scenario = Scenario.from_dict(
        {**HEALTHY, "customers": {"count": 500, "traffic_spread": 1.0, "error_spread": 3.0, "history": 300}}
    )
    spec = loop.judge_spec(scenario)
    per_request = dataclasses.replace(spec, sticky=False)
    assert rolled_back(scenario, 150, 11, per_request) >= 0.05  # the old null: bad events follow requests
    assert rolled_back(scenario, 150, 11, spec) <= 0.01


def test_sticky_customers_a_broken_canary_is_still_caught_in_seconds():
    scenario = Scenario.from_dict(
        {
            **HEALTHY,
            "duration": 300,
            "baseline_error_rate": 0.001,
            "canary_error_rate": 0.1,
            "customers": {"count": 500, "history": 300},
        }
    )
    result = loop.run(scenario, 60, np.random.default_rng(5))
    assert np.all(~np.isnan(result.rolled_back_at)) and np.median(result.rolled_back_at) <= 40


def test_sticky_customers_without_any_history_the_request_fallback_allows_them_to_differ():
    # nothing on stable before the canary: the group test cannot run, the judge tests per request
    # allowing the canary's customers to fail up to 4x as often as stable's (sticky_fallback)
    customers = {"count": 500, "traffic_spread": 1.0, "error_spread": 3.0, "history": 0}
    scenario = Scenario.from_dict({**HEALTHY, "customers": customers})
    spec = loop.judge_spec(scenario)
    assert rolled_back(scenario, 150, 12, dataclasses.replace(spec, sticky=False)) >= 0.05
    assert rolled_back(scenario, 150, 12, spec) <= 0.01
    broken = Scenario.from_dict(
        {**HEALTHY, "duration": 300, "baseline_error_rate": 0.001, "canary_error_rate": 0.1, "customers": customers}
    )
    result = loop.run(broken, 60, np.random.default_rng(6))
    assert np.all(~np.isnan(result.rolled_back_at)) and np.median(result.rolled_back_at) <= 60


def test_one_alpha_for_all_metrics():
    scenario = Scenario.from_dict({**HEALTHY, "metrics": 4, "baseline_error_rate": 0.05, "canary_error_rate": 0.05})
    spec = dataclasses.replace(loop.judge_spec(scenario), alpha=0.2)  # large, so that a broken split shows
    split = rolled_back(scenario, 400, 7, spec)
    assert split <= 0.2
    # each metric alone at 0.2 (the old rule: any one rolls back) goes well past it
    alone = [dataclasses.replace(spec, metrics=(m,)) for m in spec.metrics]
    any_one = np.zeros(400, dtype=bool)
    for single in alone:
        any_one |= ~np.isnan(loop.run(scenario, 400, np.random.default_rng(7), single).rolled_back_at)
    assert any_one.mean() > split


def test_a_restart_continues_the_e_process_exactly():
    base = {**HEALTHY, "canary_error_rate": 0.03, "duration": 300}
    plain = loop.run(Scenario.from_dict(base), 100, np.random.default_rng(9))
    restarted = loop.run(Scenario.from_dict({**base, "restarts": [20, 40, 60, 150]}), 100, np.random.default_rng(9))
    np.testing.assert_array_equal(plain.rolled_back_at, restarted.rolled_back_at)
    assert (~np.isnan(plain.rolled_back_at)).mean() > 0.5


ROLLOUT = {
    "steps": [
        {"weight": 5, "min_requests": 100, "min_seconds": 30, "max_seconds": 300},
        {"weight": 50, "min_requests": 500, "min_seconds": 30, "max_seconds": 300},
    ],
    "metrics": [{"name": "errors", "kind": "errors", "rate_floor": 0.005}],
}


def test_a_canary_exactly_min_regression_worse_is_promoted_at_most_five_percent_of_the_time():
    worse = Scenario.from_dict(
        {**HEALTHY, "duration": 900, "baseline_error_rate": 0.005, "canary_error_rate": 0.01, "rollout": ROLLOUT}
    )
    result = simulate.run(worse, runs=300)["policies"]["sequential"]
    assert result["missed_share"] <= 0.05 and result["rolled_back_share"] > 0.5


def test_timeouts_are_inconclusive_never_a_rollback():
    tight = {**ROLLOUT, "steps": [{**s, "max_seconds": 40} for s in ROLLOUT["steps"]]}
    healthy = Scenario.from_dict({**HEALTHY, "duration": 300, "rate": 20, "rollout": tight})
    result = simulate.run(healthy, runs=200)["policies"]["sequential"]
    assert result["inconclusive_share"] > 0.3
    assert result["false_rollback_rate"] <= 0.01
    rollback = Scenario.from_dict(
        {**HEALTHY, "duration": 300, "rate": 20, "rollout": {**tight, "on_inconclusive": "rollback"}}
    )
    counted = simulate.run(rollback, runs=200)["policies"]["sequential"]
    assert counted["false_rollback_rate"] >= result["inconclusive_share"] - 0.15  # every rollback counts


def test_late_onset_is_caught_within_forty_seconds_after_fifteen_healthy_minutes():
    late = Scenario.from_dict(
        {**HEALTHY, "duration": 1000, "baseline_error_rate": 0.001, "canary_error_rate": 0.05, "onset": 900}
    )
    result = loop.run(late, 100, np.random.default_rng(13))
    assert np.median(result.rolled_back_at - 900) <= 40


def test_a_thirty_percent_slower_median_under_the_threshold_is_caught_and_equal_latency_is_not():
    latency = {"stable": {"median": 80, "sigma": 0.5}, "canary": {"median": 104, "sigma": 0.5}, "threshold_ms": 1000}
    quiet = {**HEALTHY, "baseline_error_rate": 0.001, "canary_error_rate": 0.001}
    slower = Scenario.from_dict({**quiet, "duration": 300, "latency": latency})
    caught = loop.run(slower, 100, np.random.default_rng(17))
    assert (~np.isnan(caught.rolled_back_at)).mean() >= 0.9
    same = {**latency, "canary": latency["stable"]}
    healthy = Scenario.from_dict({**quiet, "latency": same})
    assert rolled_back(healthy, 200, 19) <= 0.01
