"""How the judge's state reads as a verdict, per run: the tests of every metric against one alpha.

Sits under ``canary.analysis.rollout`` (the state and its update, bin by bin); the live judge
(``canary.analysis.facade``) and the simulator (``canary.analysis.loop``) both read it here.

Verdicts (``Verdict``): ``fail`` when any test crosses; ``pass`` when the step has baked and, for
a step before the last, no metric holds strong evidence against the canary (an e-value past the
square root of its threshold), and for the last step every
metric rules out a regression of ``min_regression`` with the reversed test at ``pass_alpha``
(averaged with the rate floor's test, :func:`floor_log_clear`) and holds no strong evidence against
the canary either (or is within its tolerance); ``inconclusive`` at ``max_seconds`` without either; else ``continue``.
A sample-ratio mismatch (the canary's share of requests far from the weight asked, tested with an
anytime-valid binomial mixture at ``SRM_ALPHA``; sticky: more than 1% of requests served by the
track their bucket group is not on, or the customers seen falling into the bucket groups otherwise
than by the groups' widths, ``canary.analysis.customers``, at ``SRM_ALPHA``) holds the rollout: no
pass until a person looks.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from canary.analysis.customers import customers_log_e, group_widths
from canary.analysis.rollout import (
    CONTINUE,
    EARLIER_STEP_SHARE,
    FAIL,
    INCONCLUSIVE,
    PASS,
    RATIO_WEIGHTS,
    Array,
    IntArray,
    JudgeState,
    MetricState,
    by_customer,
    step_tests,
)
from canary.analysis.spec import JudgeSpec, MetricRule

TOLERANCE_Z = 3.0
SRM_ALPHA = 1e-3  # a healthy split is held for a mismatch at most this often


def _widest_group(spec: JudgeSpec) -> int:
    cuts = (0, *spec.bucket_boundaries)
    widths = [b - a for a, b in itertools.pairwise(cuts)]
    return widths.index(max(widths))


@dataclass
class MetricReading:
    """What the verdict rests on for one metric, per run."""

    log_e: Array  # the largest of the metric's failing tests
    fails: npt.NDArray[np.bool_]
    blocked: npt.NDArray[np.bool_]  # both tracks miss the objective: neither rollback nor pass
    no_evidence: npt.NDArray[np.bool_]
    ruled_out: npt.NDArray[np.bool_]
    within_tolerance: npt.NDArray[np.bool_]
    log_clear: Array


def read_metric(spec: JudgeSpec, rule: MetricRule, ms: MetricState, tests: Array) -> MetricReading:
    """``tests``: per run, how many tests share alpha (``step_tests``)."""
    threshold = np.log(tests / spec.alpha)
    # the regression tests as read at every event of the last bin (``MetricState.peak``)
    log_e = plain = ms.peak if ms.peak is not None else ms.regression.log_e(RATIO_WEIGHTS)
    log_clear = ms.clear
    hold = plain  # evidence that keeps a step from passing (a hold is no rollback)
    if by_customer(spec, rule):
        # a run whose first group had no history before the canary is judged per request, by the
        # test that allows its customers to differ (sticky_fallback); the plain test still holds
        fallback = ms.spread.log_e(RATIO_WEIGHTS) if ms.spread is not None else plain
        log_e, hold = fallback, np.maximum(fallback, plain)
    if ms.groups is not None and ms.groups.seen:
        per_group = ms.groups.log_e().max(axis=1)
        # the pass test reads one group fixed by the spec (the widest): under "the canary is
        # min_regression worse for its customers" any one group's test is valid by itself
        widest = _widest_group(spec)
        informed = ms.groups.informed()
        log_e = np.where(informed, per_group, log_e)
        hold = np.where(informed, per_group, hold)
        log_clear = np.where(informed, ms.groups.log_clear()[:, widest], ms.clear)
    # averaged with the floor's pass test: the pass's null becomes "min_regression worse than
    # max(stable, rate_floor)", the rate floor's meaning, so a canary with no bad events can pass
    log_clear = np.logaddexp(log_clear, floor_log_clear(rule, ms)) - math.log(2)
    fails = log_e >= threshold
    if ms.latency is not None:
        lat = ms.latency.log_e()
        fails |= lat >= threshold
        log_e = np.maximum(log_e, lat)
    blocked = np.zeros_like(fails)
    stable_rate = ms.stable_bad / np.maximum(ms.stable_n, 1)
    if ms.objective is not None and ms.stable_objective is not None and rule.objective is not None:
        obj = _mix(ms.objective)
        stable_misses = (_mix(ms.stable_objective) >= threshold) | (stable_rate > rule.objective)
        fails |= (obj >= threshold) & ~stable_misses
        blocked = (obj >= threshold) & stable_misses
        log_e = np.maximum(log_e, np.where(stable_misses, -np.inf, obj))
    tol = np.zeros_like(fails)
    if rule.tolerance > 0:
        upper = wilson_upper(ms.canary_bad, ms.canary_n, TOLERANCE_Z)
        tol = (ms.canary_n > 0) & (upper <= stable_rate + rule.tolerance)
    return MetricReading(
        log_e=log_e,
        fails=fails,
        blocked=blocked,
        no_evidence=np.maximum(log_e, hold) <= EARLIER_STEP_SHARE * threshold,
        ruled_out=log_clear >= math.log(1 / spec.pass_alpha),
        within_tolerance=tol,
        log_clear=log_clear,
    )


def floor_log_clear(rule: MetricRule, ms: MetricState) -> Array:
    """Log e-value against "the canary's bad rate is at least ``min_regression * rate_floor``".

    The likelihood ratio of the canary's own counts, the rate floor against ``p0`` =
    ``min_regression * rate_floor``: under any rate at least ``p0`` each request's factor has an
    expectation of at most 1 (it falls as the rate rises), so this is a test supermartingale for
    that composite null.  Without it, a canary and a stable with no bad events at all could never
    rule anything out (the relative test learns only from bad events).
    """
    p0 = min(rule.min_regression * rule.rate_floor, 1 - 1e-9)
    p1 = rule.rate_floor
    good = np.maximum(ms.canary_n - ms.canary_bad, 0.0)
    out: Array = ms.canary_bad * math.log(p1 / p0) + good * (math.log1p(-p1) - math.log1p(-p0))
    return out


def srm_mismatch(state: JudgeState, spec: JudgeSpec) -> npt.NDArray[np.bool_]:
    if spec.sticky:
        out: npt.NDArray[np.bool_] = (state.misrouted >= 20) & (state.misrouted > 0.01 * state.routed)
        return out | customers_skewed(state, spec)
    return _mix(state.srm) >= math.log(1 / SRM_ALPHA)


def customers_skewed(state: JudgeState, spec: JudgeSpec) -> npt.NDArray[np.bool_]:
    """Sticky: the customers seen fall into the bucket groups otherwise than by the groups' widths."""
    widths = group_widths(spec)
    if state.customers.shape[1] != len(widths):
        return np.zeros(len(state.step), dtype=bool)
    out: npt.NDArray[np.bool_] = customers_log_e(state.customers, widths) >= math.log(1 / SRM_ALPHA)
    return out


def verdicts(state: JudgeState, spec: JudgeSpec) -> IntArray:
    """The verdict code per run (``CODES`` maps them to ``Verdict``)."""
    tests = step_tests(spec, state)
    readings = [read_metric(spec, r, ms, tests) for r, ms in zip(spec.metrics, state.metrics, strict=True)]
    fail = np.zeros(len(state.step), dtype=bool)
    blocked = fail.copy()
    for rd in readings:
        fail |= rd.fails
        blocked |= rd.blocked
    step_index = np.clip(state.step, 0, len(spec.steps) - 1)
    min_seconds = np.asarray([s.min_seconds for s in spec.steps])[step_index]
    min_requests = np.asarray([s.min_requests for s in spec.steps])[step_index]
    max_seconds = np.asarray([s.max_seconds for s in spec.steps])[step_index]
    baked = (state.step_seconds >= min_seconds) & (state.step_canary_n >= min_requests) & (state.step >= 0)
    last = state.step >= len(spec.steps) - 1
    clean = np.ones_like(fail)
    for rd in readings:
        earlier_ok = rd.no_evidence | rd.within_tolerance
        # the last step also needs no strong evidence against the canary: the pass test alone (the
        # rate floor's, on a few dozen requests at a coarse floor) could promote a canary whose
        # regression test is on its way to failing; an extra condition only makes passing rarer
        last_ok = (rd.ruled_out & rd.no_evidence) | rd.within_tolerance
        clean &= np.where(last, last_ok, earlier_ok)
    mismatch = srm_mismatch(state, spec)
    passes = baked & clean & ~blocked & ~mismatch & ~fail
    out = np.full(len(state.step), CONTINUE, dtype=np.int64)
    out = np.where(passes, PASS, out)
    out = np.where((out == CONTINUE) & (state.step_seconds >= max_seconds) & (state.step >= 0), INCONCLUSIVE, out)
    out = np.where(fail, FAIL, out)
    return out


def _mix(cum: Array) -> Array:
    out: Array = np.logaddexp.reduce(cum, axis=1) - math.log(cum.shape[1])
    return out


def wilson_upper(successes: Array, trials: Array, z: float) -> Array:
    t = np.maximum(trials, 1)
    p = successes / t
    denom = 1 + z * z / t
    centre = (p + z * z / (2 * t)) / denom
    half = z * np.sqrt(p * (1 - p) / t + z * z / (4 * t * t)) / denom
    out: Array = np.where(trials > 0, np.minimum(1.0, centre + half), 1.0)
    return out
