"""Sticky routing with little history on stable: a broken canary neither passes a step nor stays.

The case the notification end-to-end test met (importer 1.1, sticky by account, 50% then 75%): the
canary failed 7 of its first 29 requests while stable served 56 without one failure, and the first
bucket group had shown a single bad event on stable before the canary.  On so short a history the
group test cannot tell a broken canary from customers who fail more on both releases, so the
judge must not read its silence as "no evidence against the canary".
"""

from __future__ import annotations

from canary.analysis.facade import GroupCounts, MetricBin, RolloutJudge, StepContext, TrackCounts
from canary.analysis.rollout import Verdict
from canary.analysis.spec import JudgeSpec

SPEC = JudgeSpec.from_mapping(
    {
        "steps": [
            {"weight": 50, "min_requests": 20, "min_seconds": 3, "max_seconds": 120},
            {"weight": 75, "min_requests": 20, "min_seconds": 3, "max_seconds": 120},
        ],
        "metrics": [{"name": "errors", "kind": "errors", "rate_floor": 0.2}],
        "sticky": {"header": "X-Account-Id"},
    }
)


def grouped(step: int, counts: list[tuple[int, int]]) -> list[MetricBin]:
    """One bin: (requests, bad) per bucket group (group 0, group 1, the reference); group g is on
    the canary from step g."""
    groups = tuple(GroupCounts(n, b, n if g <= step and g < 2 else 0) for g, (n, b) in enumerate(counts))
    on = [g for g in groups if g.canary_requests]
    cn, cb = sum(g.requests for g in on), sum(g.bad for g in on)
    total, bad = sum(g.requests for g in groups), sum(g.bad for g in groups)
    return [MetricBin("errors", TrackCounts(cn, cb), TrackCounts(total - cn, bad - cb), groups)]


def first_step(history_bad_in: int | None) -> list[Verdict]:
    judge = RolloutJudge.new(SPEC)
    for second in range(10):  # pending: ten seconds of history on stable, at most one bad event
        bad = [0, 0, 0]
        if history_bad_in is not None and second == 4:
            bad[history_bad_in] = 1
        d = judge.observe(grouped(-1, [(5, bad[0]), (3, bad[1]), (3, bad[2])]), StepContext(-1))
        assert d.verdict is Verdict.CONTINUE
    verdicts = []
    # the canary (group 0) fails 7 of 29 over the first 4 seconds, stable 0 of 56; then it goes on failing
    # at the same rate
    first = [[(8, 2), (7, 0), (7, 0)], [(7, 2), (7, 0), (7, 0)], [(7, 1), (7, 0), (7, 0)], [(7, 2), (7, 0), (7, 0)]]
    for counts in first + [[(7, 2), (7, 0), (7, 0)]] * 60:
        d = judge.observe(grouped(0, counts), StepContext(0, 1.0, 0.5))
        verdicts.append(d.verdict)
        if d.verdict is Verdict.FAIL:
            break
    return verdicts


def test_a_canary_failing_7_of_29_against_stables_0_of_56_passes_no_step_on_a_short_history():
    for history in (None, 0, 2):  # no bad event before the canary; one, in group 0; one, in the reference
        verdicts = first_step(history)
        assert Verdict.PASS not in verdicts, (history, verdicts)
        # and it does not stay: the judge rolls it back within a minute of the canary's first request
        assert verdicts[-1] is Verdict.FAIL, (history, verdicts)
