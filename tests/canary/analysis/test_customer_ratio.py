"""The sample-ratio check on customers (sticky routing): the customers a router has seen fall into
the rollout's bucket groups by the groups' widths, or the rollout is held with the numbers."""

from __future__ import annotations

import json
import math

import numpy as np

from canary.analysis.customers import customers_log_e, group_widths
from canary.analysis.facade import GroupCounts, MetricBin, RolloutJudge, StepContext, TrackCounts
from canary.analysis.reading import SRM_ALPHA
from canary.analysis.rollout import JudgeState, Verdict
from canary.analysis.spec import JudgeSpec
from tests.canary.analysis.test_rollout_judge import SPEC as BASE

# the judge tests' two steps (5%, 50%), judged on errors alone, routed by customer
SPEC = JudgeSpec.from_mapping({**BASE, "metrics": BASE["metrics"][:1], "sticky": {"header": "X-Account-Id"}})
HOLD = math.log(1 / SRM_ALPHA)


def test_healthy_customers_are_held_at_most_srm_alpha_of_the_time_whenever_the_check_is_read():
    """Customers arriving one group at a time by the widths, the check read after every 50 of them up
    to 10,000: the largest e-value a run ever shows crosses the hold in at most SRM_ALPHA of runs."""
    rng = np.random.default_rng(7)
    widths = group_widths(SPEC)
    runs = 4000
    seen = np.zeros((runs, len(widths)))
    largest = np.full(runs, -np.inf)
    for _ in range(200):
        seen += rng.multinomial(50, widths, size=runs)
        largest = np.maximum(largest, customers_log_e(seen, widths))
    assert (largest >= HOLD).mean() <= SRM_ALPHA  # measured: 0.00015 over 20,000 runs


def test_a_hash_that_puts_twice_the_customers_on_the_canary_is_held_with_the_numbers():
    """A router whose hash sends 10% of customers into the first group (5% of the hash space): the
    judge holds the rollout (never passes it) and says how many customers and which shares."""
    rng = np.random.default_rng(3)
    widths = group_widths(SPEC)
    skewed = np.asarray([0.10, 0.45, 0.45])
    healthy, skewing = RolloutJudge.new(SPEC), RolloutJudge.new(SPEC)
    levels = {"healthy": np.zeros(3, dtype=int), "skewed": np.zeros(3, dtype=int)}
    verdicts: dict[str, list[Verdict]] = {"healthy": [], "skewed": []}
    reason = ""
    for _ in range(60):
        for name, judge, shares in (("healthy", healthy, widths), ("skewed", skewing, skewed)):
            levels[name] += rng.multinomial(60, shares)
            requests = (50, 450, 500)
            served = (50, 0, 0)
            groups = tuple(GroupCounts(n, 0, c, int(k)) for n, c, k in zip(requests, served, levels[name], strict=True))
            bins = [MetricBin("errors", TrackCounts(50, 0), TrackCounts(950, 0), groups)]
            d = judge.observe(bins, StepContext(0, 1.0, 0.05))
            verdicts[name].append(d.verdict)
            if name == "skewed":
                reason = d.reason
    assert Verdict.PASS in verdicts["healthy"]
    assert Verdict.PASS not in verdicts["skewed"]
    assert reason.startswith("judging: held: the canary's share of traffic does not match")
    assert "of the 3600 customers seen are in the canary's bucket groups, which hold 5.00% of the hash space" in (
        reason
    )
    # the judge's state keeps the level through a restart (plain data)
    state = JudgeState.from_dict(json.loads(json.dumps(skewing.state.to_dict())))
    assert state.customers.tolist() == [levels["skewed"].tolist()]


def test_a_restarted_router_s_smaller_count_replaces_the_old_one_and_old_states_read_back():
    judge = RolloutJudge.new(SPEC)

    def observe(customers: tuple[int, int, int]) -> None:
        groups = tuple(GroupCounts(10, 0, c, k) for c, k in zip((10, 0, 0), customers, strict=True))
        judge.observe([MetricBin("errors", TrackCounts(10, 0), TrackCounts(20, 0), groups)], StepContext(0, 1.0, 0.05))

    observe((50, 450, 500))
    observe((1, 9, 10))  # the router restarted: it counts afresh, nothing is added twice
    assert judge.state.customers.tolist() == [[1.0, 9.0, 10.0]]
    observe((0, 0, 0))  # a reading without counts (an older router) keeps what was known
    assert judge.state.customers.tolist() == [[1.0, 9.0, 10.0]]
    stored = judge.state.to_dict()
    del stored["customers"]  # stored before the field existed
    assert JudgeState.from_dict(stored).customers.shape == (1, 0)
