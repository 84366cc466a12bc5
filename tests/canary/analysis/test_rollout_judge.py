"""The judge the controller calls (RolloutJudge): verdicts, words, bad input, state round trip, mirror."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from canary.analysis.facade import GroupCounts, MetricBin, RolloutJudge, StepContext, TrackCounts
from canary.analysis.mirror import MirrorBin
from canary.analysis.rollout import Verdict
from canary.analysis.spec import JudgeSpec, SpecError

SPEC = {
    "steps": [
        {"weight": 5, "min_requests": 50, "min_seconds": 30, "max_seconds": 120},
        {"weight": 50, "min_requests": 100, "min_seconds": 30, "max_seconds": 600},
    ],
    "metrics": [{"name": "errors", "kind": "errors", "rate_floor": 0.01}, {"name": "lost", "kind": "conservation"}],
}


def bins(rng, spec, share, canary_rate, stable_rate, rps=100):
    cn = int(rng.binomial(rng.poisson(rps), share))
    sn = int(rng.poisson(rps * (1 - share)))
    return [
        MetricBin(
            m.name,
            TrackCounts(cn, int(rng.binomial(cn, canary_rate))),
            TrackCounts(sn, int(rng.binomial(sn, stable_rate))),
        )
        for m in spec.metrics
    ]


def test_the_shipped_specs_parse_and_bad_specs_name_the_field():
    for name in ("importer", "opens", "resizer"):
        with open(f"manifests/rollouts/{name}.yaml", encoding="utf-8") as f:
            spec = JudgeSpec.from_mapping(yaml.safe_load(f))
        assert spec.sticky and spec.bucket_boundaries[0] > 0
    with pytest.raises(SpecError, match=r"spec.steps\[1\].weight: must be a number"):
        JudgeSpec.from_mapping({"steps": [{"weight": 5}, {"weight": "ten"}]})
    with pytest.raises(SpecError, match="on_inconclusive"):
        JudgeSpec.from_mapping({**SPEC, "on_inconclusive": "shrug"})
    assert not JudgeSpec.from_mapping({**SPEC, "sticky": "none"}).sticky  # as a rollout spec writes it
    with pytest.raises(SpecError, match=r"spec\.sticky: must be none or a mapping"):
        JudgeSpec.from_mapping({**SPEC, "sticky": "X-Account-Id"})


def test_a_total_break_fails_and_the_words_say_why():
    spec = JudgeSpec.from_mapping(SPEC)
    judge = RolloutJudge.new(spec)
    rng = np.random.default_rng(2)
    seconds = 0
    decision = None
    while decision is None or (decision.verdict is Verdict.CONTINUE and seconds < 120):
        seconds += 1
        decision = judge.observe(bins(rng, spec, 0.05, 0.5, 0.001), StepContext(0, 1.0, 0.05))
    assert decision.verdict is Verdict.FAIL and seconds <= 10
    assert decision.reason.startswith("canary is worse than stable: errors: canary")
    top = max(decision.evidence, key=lambda e: e.e_value)
    assert top.e_value >= top.threshold == 2 / 0.01  # two metrics share the rollout's alpha
    assert top.ratio is not None and top.ratio.low95 > 1


def test_no_data_continues_and_a_step_without_a_conclusion_is_inconclusive_not_fail():
    spec = JudgeSpec.from_mapping(SPEC)
    judge = RolloutJudge.new(spec)
    empty = [MetricBin(m.name, TrackCounts(0, 0), TrackCounts(0, 0)) for m in spec.metrics]
    for _ in range(119):
        assert judge.observe(empty, StepContext(0, 1.0, 0.05)).verdict is Verdict.CONTINUE
    decision = judge.observe(empty, StepContext(0, 1.0, 0.05))
    assert decision.verdict is Verdict.INCONCLUSIVE and "not conclusive after 120 s" in decision.reason


def test_the_last_step_passes_only_by_ruling_out_the_regression_and_says_what_it_can_rule_out():
    spec = JudgeSpec.from_mapping(SPEC)
    judge = RolloutJudge.new(spec)
    rng = np.random.default_rng(4)
    verdict, step, second = Verdict.CONTINUE, 0, 0
    while verdict is not Verdict.PASS or step == 0:
        if verdict is Verdict.PASS:
            step = 1
        second += 1
        decision = judge.observe(
            bins(rng, spec, [0.05, 0.5][step], 0.01, 0.01), StepContext(step, 1.0, [0.05, 0.5][step])
        )
        verdict = decision.verdict
        assert verdict not in (Verdict.FAIL, Verdict.INCONCLUSIVE)
    assert all(e.no_regression_e_value >= e.pass_threshold for e in decision.evidence)
    # at a trickle the same step cannot rule a 2x regression out, and says so
    slow = RolloutJudge.new(spec)
    for _ in range(40):
        d = slow.observe(bins(rng, spec, 0.5, 0.001, 0.001, rps=0.4), StepContext(1, 1.0, 0.5))
    assert "this step can only rule out" in d.reason and "or more" in d.reason


def test_state_round_trip_continues_the_same_e_process():
    spec = JudgeSpec.from_mapping({**SPEC, "sticky": {"header": "X-Account-Id"}})
    judge = RolloutJudge.new(spec)
    rng = np.random.default_rng(6)

    def grouped(step):
        out = []
        for m in spec.metrics:
            groups = [GroupCounts(int(n), int(rng.binomial(n, 0.02)), 0) for n in rng.poisson([5, 45, 50])]
            on = [g for i, g in enumerate(groups[:-1]) if i <= step]
            cn, cb = sum(g.requests for g in on), sum(g.bad for g in on)
            groups = [
                GroupCounts(g.requests, g.bad, g.requests if i <= step and i < 2 else 0) for i, g in enumerate(groups)
            ]
            total, bad = sum(g.requests for g in groups), sum(g.bad for g in groups)
            out.append(MetricBin(m.name, TrackCounts(cn, cb), TrackCounts(total - cn, bad - cb), tuple(groups)))
        return out

    for _ in range(30):  # before the canary takes traffic: the groups' history on stable
        assert judge.observe(grouped(-1), StepContext(-1)).verdict is Verdict.CONTINUE
    for _ in range(50):
        judge.observe(grouped(0), StepContext(0))
    stored = json.loads(json.dumps(judge.to_dict()))
    assert stored["version"] == 1
    restored = RolloutJudge.from_dict(stored)
    for _ in range(30):
        b = grouped(1)
        a, r = judge.observe(b, StepContext(1)), restored.observe(b, StepContext(1))
        assert a == r
    assert math.isfinite(a.evidence[0].e_value)
    with pytest.raises(ValueError, match="version 1 expected"):
        RolloutJudge.from_dict({**stored, "version": 0})


def test_bad_input_is_refused_with_the_field():
    spec = JudgeSpec.from_mapping(SPEC)
    judge = RolloutJudge.new(spec)
    with pytest.raises(ValueError, match="no counts for metric 'lost'"):
        judge.observe([MetricBin("errors", TrackCounts(1, 0), TrackCounts(1, 0))], StepContext(0))
    with pytest.raises(ValueError, match=r"errors.canary: counts must be 0 <= bad <= requests, got 5 of 3"):
        judge.observe([MetricBin(m.name, TrackCounts(3, 5), TrackCounts(1, 0)) for m in spec.metrics], StepContext(0))
    with pytest.raises(ValueError, match=r"context\.step"):
        judge.observe([MetricBin(m.name, TrackCounts(1, 0), TrackCounts(1, 0)) for m in spec.metrics], StepContext(7))


def mirror_run(rng, canary_diff, noise, compared=5, limit=1000):
    spec = JudgeSpec.from_mapping({**SPEC, "mirror": {"min_compared": 200, "min_seconds": 30, "max_seconds": 600}})
    judge = RolloutJudge.new(spec)
    seen = 0
    while seen < limit:
        seen += compared
        b = MirrorBin(compared, int(rng.binomial(compared, canary_diff)), compared, int(rng.binomial(compared, noise)))
        decision = judge.observe_mirror(b)
        if decision.verdict is not Verdict.CONTINUE:
            return decision.verdict, seen
    return Verdict.CONTINUE, seen


def test_mirror_noise_seen_on_the_baseline_passes_and_a_real_difference_fails_fast():
    rng = np.random.default_rng(8)
    healthy = [mirror_run(rng, 0.01, 0.01)[0] for _ in range(100)]  # a field that differs 1% of the time
    assert healthy.count(Verdict.PASS) >= 99
    caught = [mirror_run(rng, 0.25, 0.0) for _ in range(50)]  # a quarter of photos sideways
    assert all(v is Verdict.FAIL and seen <= 100 for v, seen in caught)


def test_a_spec_asking_for_a_baseline_judges_no_canary_answer_until_the_baseline_counts():
    rule = {"min_compared": 20, "min_seconds": 1, "max_seconds": 30, "baseline": "stable"}
    judge = RolloutJudge.new(JudgeSpec.from_mapping({**SPEC, "mirror": rule}))
    # a router older than the spec counts no baseline: the canary's differences (noise, say) are
    # neither judged against the objective (a false failure) nor counted toward a pass
    for _ in range(20):
        decision = judge.observe_mirror(MirrorBin(50, 5))
        assert decision.verdict is Verdict.CONTINUE
        assert "waiting for the baseline's answers" in decision.reason
    assert judge.observe_mirror(MirrorBin(50, 5), seconds=10).verdict is Verdict.INCONCLUSIVE
    # once the baseline counts, the same noise on both sides passes
    judge = RolloutJudge.new(JudgeSpec.from_mapping({**SPEC, "mirror": rule}))
    judge.observe_mirror(MirrorBin(50, 5))
    assert judge.observe_mirror(MirrorBin(50, 5, 50, 5)).verdict is Verdict.PASS
    assert judge.mirror.compared[0] == 50  # the first bin, before any baseline, was not counted
    with pytest.raises(SpecError, match=r"spec.mirror.baseline: must be none or stable"):
        JudgeSpec.from_mapping({**SPEC, "mirror": {**rule, "baseline": "copy"}})


def test_a_split_that_is_not_the_weight_asked_holds_the_rollout_with_the_numbers():
    spec = JudgeSpec.from_mapping(SPEC)
    honest, skewed = RolloutJudge.new(spec), RolloutJudge.new(spec)
    rng = np.random.default_rng(10)
    verdicts = set()
    for _ in range(100):
        honest_bins = bins(rng, spec, 0.05, 0.001, 0.001)
        verdicts.add(honest.observe(honest_bins, StepContext(0, 1.0, 0.05)).verdict)
        d = skewed.observe(bins(rng, spec, 0.12, 0.001, 0.001), StepContext(0, 1.0, 0.05))  # asked 5%, got 12%
        assert d.verdict is not Verdict.PASS
    assert Verdict.PASS in verdicts
    assert d.verdict is Verdict.CONTINUE and d.reason.startswith("judging: held: the canary's share")
    assert "% of requests on the canary, 5.00% asked" in d.reason


def sticky_bins(spec, group_requests, canary_served):
    """One bin of sticky routing: each bucket group's requests, how many the canary served."""
    groups = tuple(GroupCounts(n, 0, c) for n, c in zip(group_requests, canary_served, strict=True))
    cn, total = sum(canary_served), sum(group_requests)
    return [MetricBin(m.name, TrackCounts(cn, 0), TrackCounts(total - cn, 0), groups) for m in spec.metrics]


def test_sticky_customers_on_the_wrong_track_hold_but_bins_of_a_weight_change_do_not():
    spec = JudgeSpec.from_mapping({**SPEC, "sticky": {"header": "X-Account-Id"}})
    moving, misrouting = RolloutJudge.new(spec), RolloutJudge.new(spec)
    # the step's first bin straddles the move (group 0 still on stable), then ten bins read before
    # every router confirmed (weight unknown, a busy machine): neither is the router's fault
    moving.observe(sticky_bins(spec, (100, 400, 500), (0, 0, 0)), StepContext(0, 1.0, 0.05))
    for _ in range(10):
        moving.observe(sticky_bins(spec, (100, 400, 500), (0, 0, 0)), StepContext(0, 1.0, None))
    verdicts = [
        moving.observe(sticky_bins(spec, (100, 400, 500), (100, 0, 0)), StepContext(0, 1.0, 0.05)).verdict
        for _ in range(40)
    ]
    assert Verdict.PASS in verdicts  # the clean bins at the confirmed weight pass the step
    for _ in range(40):  # a router that keeps half of group 0's customers on stable at the confirmed weight
        d = misrouting.observe(sticky_bins(spec, (100, 400, 500), (50, 0, 0)), StepContext(0, 1.0, 0.05))
        assert d.verdict is not Verdict.PASS
    assert d.reason.startswith("judging: held: the canary's share") and "requests on the wrong track" in d.reason
