"""The simulator's ``sequential`` policy: the rollout judge itself, bin by bin, over many runs at once.

Sits under ``canary.analysis.simulate``.  It draws one second of traffic per run (per track, or
per sticky bucket group when the scenario has ``customers``, with the distinct customers seen per
group from each customer's first request), feeds it to
``canary.analysis.rollout`` and reads the verdicts with ``canary.analysis.reading`` (the same
code the live judge runs, with a runs axis), and, with a ``rollout:``, moves each run through the
steps as the controller's state machine does: ``pass`` goes to the next step (or promotes after
the last), ``fail`` rolls back, ``inconclusive`` does what ``on_inconclusive`` says.  At each of
``restarts`` the judge's state goes through ``to_dict``/JSON/``from_dict``, as a restarted
controller would read it back.  A closed loop starts as the controller does, with no history
before the rollout: with the spec's ``sticky.history_seconds`` each run waits in pending (no
canary traffic) until its bucket groups' history is usable or the limit has passed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from canary.analysis import reading, rollout
from canary.analysis.rollout import FAIL, INCONCLUSIVE, PASS, BinArrays, JudgeState
from canary.analysis.scenario import Scenario, Traffic
from canary.analysis.spec import BUCKETS, JudgeSpec, MetricRule, OnInconclusive, StepRule

Array = npt.NDArray[np.float64]
HISTOGRAM_MS = (25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)  # the router's buckets
NEVER = 10**15


@dataclass
class LoopResult:
    rolled_back_at: Array  # seconds after the rollout began; nan when never
    promoted_at: Array
    inconclusive: npt.NDArray[np.bool_]  # ended (or was moved on) by a step's max_seconds
    paused: npt.NDArray[np.bool_]  # inconclusive and paused for a person: neither promoted nor rolled back
    failed: Array  # canary bad events (first metric) served until the end of the run
    traffic: Traffic | None  # open loop: what the other policies replay


def judge_spec(scenario: Scenario) -> JudgeSpec:
    sticky = scenario.customers is not None
    if scenario.rollout is not None:
        spec = JudgeSpec.from_mapping(scenario.rollout)
        metrics = list(spec.metrics)
        if "metrics" not in scenario.rollout and scenario.metrics > 1:
            metrics = [MetricRule(f"m{i}", objective=scenario.objective) for i in range(scenario.metrics)]
        if scenario.latency is not None and not any(m.kind == "latency" for m in metrics):
            metrics.append(MetricRule("latency", kind="latency", threshold_ms=scenario.latency.threshold_ms))
        return JudgeSpec(
            metrics=tuple(metrics),
            steps=spec.steps,
            alpha=spec.alpha,
            on_inconclusive=spec.on_inconclusive,
            sticky=sticky,
            history_seconds=spec.history_seconds,
        )
    shares = sorted({v for _, v in scenario.canary_share if v > 0}) or [0.0]
    steps = tuple(
        StepRule(weight=v * 100, min_requests=NEVER, min_seconds=math.inf, max_seconds=math.inf) for v in shares
    )
    metrics = [MetricRule(f"m{i}", objective=scenario.objective) for i in range(scenario.metrics)]
    if scenario.latency is not None:
        metrics.append(MetricRule("latency", kind="latency", threshold_ms=scenario.latency.threshold_ms))
    return JudgeSpec(metrics=tuple(metrics), steps=steps, sticky=sticky)


def _boundaries(scenario: Scenario, spec: JudgeSpec) -> tuple[float, ...]:
    if scenario.latency is None:
        return ()
    thresholds = {m.threshold_ms for m in spec.metrics if m.kind == "latency" and m.threshold_ms is not None}
    return tuple(sorted(set(HISTOGRAM_MS) | {scenario.latency.threshold_ms} | thresholds))


def run(scenario: Scenario, runs: int, rng: np.random.Generator, spec: JudgeSpec | None = None) -> LoopResult:
    """``spec`` replaces the one the scenario implies (e.g. to judge sticky traffic per request)."""
    spec = spec or judge_spec(scenario)
    bounds = _boundaries(scenario, spec)
    state = JudgeState.new(runs, spec, len(bounds))
    closed = scenario.rollout is not None
    weights = np.asarray([s.weight / 100 for s in spec.steps])
    cuts = np.asarray(JudgeSpec(spec.metrics, spec.steps).bucket_boundaries)
    groups = _customer_groups(scenario, runs, cuts, rng) if scenario.customers is not None else None
    open_steps = [s.weight / 100 for s in spec.steps]
    # closed loop, sticky, with sticky.history_seconds: each run waits in pending (step -1, no
    # canary traffic) until its groups' history is usable or the limit, as the controller does
    waits = closed and spec.sticky and spec.history_seconds > 0
    step = np.full(runs, 0 if closed and not waits else -1, dtype=np.int64)
    done = np.zeros(runs, dtype=bool)
    rolled = np.full(runs, np.nan)
    promoted = np.full(runs, np.nan)
    inconclusive = np.zeros(runs, dtype=bool)
    paused = np.zeros(runs, dtype=bool)
    failed = np.zeros(runs)
    keep = not closed
    tr = {k: np.zeros((runs, scenario.duration), dtype=np.int64) for k in ("cn", "cb", "sn", "sb")} if keep else None
    history = int(scenario.customers.history) if scenario.customers is not None else 0
    restarts = {int(r) for r in scenario.restarts}
    for t in range(-history, scenario.duration):
        if t >= 0 and not closed:
            share = float(scenario.share_at(np.asarray([float(t)]))[0])
            step = np.full(runs, open_steps.index(share) if share in open_steps else -1, dtype=np.int64)
        # open loop: the traffic goes on after our rollback, for the other policies to replay
        active_step = np.where((done & closed) | (t < 0), -1, step)
        weight = np.where(active_step >= 0, weights[np.clip(active_step, 0, None)], 0.0)
        bins = _draw(scenario, spec, t, active_step, weight, groups, bounds, rng)
        if groups is not None:
            bins[0].group_customers = groups.arrivals.seen_by(t)
        rollout.update(state, spec, bins, np.ones(runs), active_step, weight)
        if t < 0:
            continue
        if t in restarts:
            state = JudgeState.from_dict(json.loads(json.dumps(state.to_dict())))
        failed += np.where(done, 0.0, bins[0].canary_bad)
        if tr is not None:
            b = bins[0]
            for key, counts in (("cn", b.canary_n), ("cb", b.canary_bad), ("sn", b.stable_n), ("sb", b.stable_bad)):
                tr[key][:, t] = counts
        v = reading.verdicts(state, spec)
        live = ~done & (active_step >= 0)
        fail = live & (v == FAIL)
        rolled = np.where(fail, float(t + 1), rolled)
        done |= fail
        if not closed:
            continue
        if waits:
            starts = ~done & (step < 0) & (rollout.history_ready(state) | (t + 1 >= spec.history_seconds))
            step = np.where(starts, 0, step)
        moves_on = live & (v == PASS)
        stuck = live & (v == INCONCLUSIVE)
        inconclusive |= stuck
        if spec.on_inconclusive is OnInconclusive.PAUSE:
            paused |= stuck
            done |= stuck
        elif spec.on_inconclusive is OnInconclusive.ROLLBACK:
            rolled = np.where(stuck, float(t + 1), rolled)
            done |= stuck
        else:
            moves_on |= stuck
        last = step >= len(spec.steps) - 1
        promote = moves_on & last
        promoted = np.where(promote, float(t + 1), promoted)
        done |= promote
        step = np.where(moves_on & ~last, step + 1, step)
    traffic = None if tr is None else Traffic(tr["cn"], tr["cb"], tr["sn"], tr["sb"])
    return LoopResult(rolled, promoted, inconclusive, paused, failed, traffic)


@dataclass
class _Groups:
    traffic: Array  # (runs, G+1) share of requests per bucket group, reference last
    badness: Array  # (runs, G+1) the group's mean bad-rate multiplier (request-weighted)
    arrivals: _Arrivals  # each customer's first request, for the router's count of distinct customers


class _Arrivals:
    """The bins of the customers' first requests, sorted: :meth:`seen_by` gives the router's level."""

    def __init__(self, first_bin: npt.NDArray[np.int64], group: npt.NDArray[np.int64], groups: int) -> None:
        runs = first_bin.shape[0]
        order = np.argsort(first_bin.ravel(), kind="stable")
        self.bins = first_bin.ravel()[order]
        self.rows = np.repeat(np.arange(runs), first_bin.shape[1])[order]
        self.group = group.ravel()[order]
        self.level = np.zeros((runs, groups))
        self.done = 0

    def seen_by(self, t: int) -> Array:
        """(runs, G+1) distinct customers seen per group by the end of bin ``t`` (bins in order)."""
        upto = int(np.searchsorted(self.bins, t, side="right"))
        new = slice(self.done, upto)
        np.add.at(self.level, (self.rows[new], self.group[new]), 1.0)
        self.done = upto
        return self.level.copy()


def _customer_groups(scenario: Scenario, runs: int, cuts: npt.NDArray[np.int64], rng: np.random.Generator) -> _Groups:
    c = scenario.customers
    assert c is not None
    w = rng.lognormal(0.0, c.traffic_spread, size=(runs, c.count)) if c.traffic_spread > 0 else np.ones((runs, c.count))
    w /= w.sum(axis=1, keepdims=True)
    s2 = math.log1p(c.error_spread**2)
    m = rng.lognormal(-s2 / 2, math.sqrt(s2), size=(runs, c.count)) if c.error_spread > 0 else np.ones((runs, c.count))
    bucket = rng.integers(0, BUCKETS, size=(runs, c.count))  # a fresh salt per rollout
    group = np.searchsorted(cuts, bucket, side="right")
    g = len(cuts) + 1
    traffic = np.zeros((runs, g))
    bad = np.zeros((runs, g))
    rows = np.repeat(np.arange(runs), c.count)
    np.add.at(traffic, (rows, group.ravel()), w.ravel())
    np.add.at(bad, (rows, group.ravel()), (w * m).ravel())
    # a customer's first request: exponential at its own rate, from the first bin of the history
    first = rng.exponential(1.0 / np.maximum(scenario.rate * w, 1e-12)) - c.history
    first_bin = np.floor(np.minimum(first, 10.0**9)).astype(np.int64)
    badness = np.where(traffic > 0, bad / np.maximum(traffic, 1e-300), 1.0)
    return _Groups(traffic, badness, _Arrivals(first_bin, group, g))


def _rates(scenario: Scenario, t: int, metric: str) -> tuple[float, float]:
    base = scenario.baseline_error_rate
    canary = scenario.canary_rate_for(metric) if t >= scenario.onset else base
    for b in scenario.bursts:
        if b.start <= t < b.start + b.duration:
            base = 1 - (1 - base) * (1 - b.error_rate)
            canary = 1 - (1 - canary) * (1 - b.error_rate)
    return base, canary


def _draw(
    scenario: Scenario,
    spec: JudgeSpec,
    t: int,
    step: npt.NDArray[np.int64],
    weight: Array,
    groups: _Groups | None,
    bounds: tuple[float, ...],
    rng: np.random.Generator,
) -> list[BinArrays]:
    runs = len(step)
    if groups is not None:
        gn = rng.poisson(scenario.rate * groups.traffic).astype(np.float64)
        on = rollout.canary_groups(step, gn.shape[1])
    else:
        total = rng.poisson(scenario.rate, size=runs)
        cn = rng.binomial(total, weight).astype(np.float64)
        sn = (total - cn).astype(np.float64)
    out = []
    for rule in spec.metrics:
        base, canary = _rates(scenario, t, rule.name) if t >= 0 else (scenario.baseline_error_rate,) * 2
        latency = rule.kind == "latency" and scenario.latency is not None
        if groups is not None:
            if latency:
                ps, pc = _slow_share(scenario, rule, False), _slow_share(scenario, rule, True)
                p = np.where(on, pc, ps) * np.ones_like(gn)
            else:
                p = np.where(on, canary, base) * groups.badness
            gb = rng.binomial(gn.astype(np.int64), np.clip(p, 0, 1)).astype(np.float64)
            cn_m, cb = (gn * on).sum(axis=1), (gb * on).sum(axis=1)
            b = BinArrays(cn_m, cb, gn.sum(axis=1) - cn_m, gb.sum(axis=1) - cb, gn, gb, gn * on)
        elif latency:
            b = _latency_bin(scenario, rule, cn, sn, bounds, rng)
        else:
            cb_m = rng.binomial(cn.astype(np.int64), canary).astype(np.float64)
            b = BinArrays(cn, cb_m, sn, rng.binomial(sn.astype(np.int64), base).astype(np.float64))
        out.append(b)
    return out


def _slow_share(scenario: Scenario, rule: MetricRule, canary: bool) -> float:
    lat = scenario.latency
    assert lat is not None
    median, sigma = (lat.canary_median, lat.canary_sigma) if canary else (lat.stable_median, lat.stable_sigma)
    return _above(rule.threshold_ms or lat.threshold_ms, median, sigma)


def _above(ms: float, median: float, sigma: float) -> float:
    if sigma <= 0:
        return 1.0 if median > ms else 0.0
    return 0.5 * math.erfc(math.log(ms / median) / (sigma * math.sqrt(2)))


def _latency_bin(
    scenario: Scenario, rule: MetricRule, cn: Array, sn: Array, bounds: tuple[float, ...], rng: np.random.Generator
) -> BinArrays:
    lat = scenario.latency
    assert lat is not None

    def slower(n: Array, median: float, sigma: float) -> Array:
        above = np.asarray([_above(b, median, sigma) for b in bounds] + [0.0])
        pvals = np.clip(np.concatenate([[1 - above[0]], above[:-1] - above[1:]]), 0, None)
        counts = rng.multinomial(n.astype(np.int64), pvals / pvals.sum())  # intervals below each boundary
        out: Array = (counts[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]).astype(np.float64)
        return out

    sc = slower(cn, lat.canary_median, lat.canary_sigma)
    ss = slower(sn, lat.stable_median, lat.stable_sigma)
    j = bounds.index(rule.threshold_ms or lat.threshold_ms)
    return BinArrays(cn, sc[:, j], sn, ss[:, j], slower_canary=sc, slower_stable=ss)
