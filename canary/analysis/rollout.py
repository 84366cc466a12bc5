"""The rollout's judge, vectorised over runs: all of a spec's metrics, one alpha, bin by bin.

The live judge (``canary.analysis.facade.RolloutJudge``) is this with one run; the simulator's
``sequential`` policy is this with thousands: one implementation.

Per metric the tests are: the regression test (per request: the change-point mixture of
``canary.analysis.eprocess`` on the canary's share of bad events, at the design weight when the
router routes per request and says what weight it applied, then read after each of a bin's events
in a random order, ``eprocess.peak_within_bin``, else the bin's realised split; sticky:
one test per bucket group, ``canary.analysis.sticky``); the objective test when the metric has
one (the canary alone against its objective, never when stable misses it too); for latency, a
test on the whole histogram (the mixture over every bucket boundary of the regression test on
"slower than that boundary", so a 30% slower median is seen though it never crosses the
threshold).  **One alpha per rollout**: with ``T`` tests in all, each fails at ``T/alpha``
(Bonferroni: valid whatever the metrics' dependence, e.g. slow requests that are also errors;
``step_tests``: a sticky metric judged per request for want of a history counts as one test).

Verdicts (``Verdict``, read from the state by ``canary.analysis.reading``): fail, pass,
inconclusive or continue.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from canary.analysis.eprocess import (
    ChangePointProcess,
    array,
    bin_order_seed,
    floats,
    peak_within_bin,
    share_log_lr,
)
from canary.analysis.sequential import DEFAULT_RATIOS, objective_log_lr
from canary.analysis.spec import JudgeSpec, MetricRule
from canary.analysis.sticky import StickyGroups
from canary.analysis.sticky_fallback import null_share

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
SRM_SHIFTS = (0.5, 0.8, 1.25, 2.0)
RATIOS = np.asarray(DEFAULT_RATIOS)
# prior weights of the ratios (1.5x ... 1000x): more on the large ones, where two bad canary
# requests must be enough to roll back a total break quickly; any fixed weights keep the guarantee
RATIO_WEIGHTS = np.asarray((0.06, 0.06, 0.06, 0.06, 0.10, 0.15, 0.20, 0.18, 0.13))
# latency on the whole histogram: a slower distribution raises "slower than b" by small factors
LATENCY_RATIOS = np.asarray((1.25, 1.5, 2.0, 3.0, 5.0))
# a step before the last moves on unless the evidence against the canary is past this share of the
# failing threshold (in logs): moving on is no verdict (the last step's pass test is), and more
# exposure shows a real regression sooner (``canary.analysis.reading``)
EARLIER_STEP_SHARE = 0.5


class Verdict(enum.Enum):
    CONTINUE = "continue"
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


CODES = (Verdict.CONTINUE, Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE)
CONTINUE, PASS, FAIL, INCONCLUSIVE = 0, 1, 2, 3


@dataclass
class BinArrays:
    """One metric's counts in one bin, one row per run (the facade builds it from ``MetricBin``)."""

    canary_n: Array
    canary_bad: Array
    stable_n: Array
    stable_bad: Array
    group_n: Array | None = None  # (runs, G+1): per sticky group, reference last
    group_bad: Array | None = None
    group_canary_n: Array | None = None
    group_customers: Array | None = None  # (runs, G+1): distinct customers seen per group so far (a level)
    slower_canary: Array | None = None  # (runs, B): requests slower than each histogram boundary
    slower_stable: Array | None = None


def by_customer(spec: JudgeSpec, rule: MetricRule) -> bool:
    """The metric's events are routed by customer (sticky): a queue consumer's (``conservation``)
    are split by a hash of the message id whatever the spec's sticky key, so per message."""
    return spec.sticky and rule.kind != "conservation"


def history_ready(state: JudgeState) -> npt.NDArray[np.bool_]:
    """Per run: every sticky metric's first bucket group has a usable history on stable
    (``StickyGroups.informed``), or no group counts were given (nothing to wait for): a sticky
    rollout's pending phase may wait for it (``JudgeSpec.history_seconds``) before the first step."""
    ready = np.ones(len(state.step), dtype=bool)
    for ms in state.metrics:
        if ms.groups is not None:
            ready &= ms.groups.informed() | (ms.groups.given == 0)
    return ready


def total_tests(spec: JudgeSpec, state: JudgeState) -> int:
    """How many tests share the rollout's alpha: each fails at ``total_tests / alpha``."""
    count = 0
    for rule, ms in zip(spec.metrics, state.metrics, strict=True):
        count += ms.groups.groups if ms.groups is not None else 1
        count += (rule.objective is not None) + (ms.latency is not None)
    return count + (spec.mirror is not None)


def step_tests(spec: JudgeSpec, state: JudgeState) -> Array:
    """Per run, the tests that share alpha once the canary takes traffic: a sticky metric whose first
    group had no usable history is judged by one request-level test, not one per group.

    Which it is is fixed before the canary's first request (``StickyGroups.informed``), so the
    count depends on no canary data; the mirror phase, earlier, counts every group
    (``total_tests``), and ``1/total_tests + (k-1)/k <= 1`` keeps the sum within alpha.
    """
    count = np.full(len(state.step), float(spec.mirror is not None))
    for rule, ms in zip(spec.metrics, state.metrics, strict=True):
        if ms.groups is not None:
            count += np.where(ms.groups.informed(), float(ms.groups.groups), 1.0)
        else:
            count += 1.0
        count += float((rule.objective is not None) + (ms.latency is not None))
    return count


@dataclass
class MetricState:
    regression: ChangePointProcess
    clear: Array  # log e against "canary min_regression worse" (per request)
    canary_n: Array
    canary_bad: Array
    stable_n: Array
    stable_bad: Array
    groups: StickyGroups | None = None
    objective: Array | None = None  # (runs, R) cumulative log LR, canary vs the objective
    stable_objective: Array | None = None
    latency: ChangePointProcess | None = None
    # sticky: the request-level test that allows the canary's customers to differ (sticky_fallback)
    spread: ChangePointProcess | None = None
    # the largest log e of ``regression`` at any event of the last bin, its end included
    # (``eprocess.peak_within_bin``): what the failing test reads
    peak: Array | None = None

    def __post_init__(self) -> None:
        # stored before the field existed: the bin's end, as then
        if self.peak is None:
            self.peak = self.regression.log_e(RATIO_WEIGHTS)

    @classmethod
    def new(cls, runs: int, spec: JudgeSpec, rule: MetricRule, boundaries: int) -> MetricState:
        zero = np.zeros(runs)
        return cls(
            regression=ChangePointProcess.new(runs, len(RATIOS)),
            clear=zero.copy(),
            canary_n=zero.copy(),
            canary_bad=zero.copy(),
            stable_n=zero.copy(),
            stable_bad=zero.copy(),
            groups=StickyGroups.new(runs, len(spec.steps), rule.min_regression) if by_customer(spec, rule) else None,
            objective=np.zeros((runs, len(RATIOS))) if rule.objective is not None else None,
            stable_objective=np.zeros((runs, len(RATIOS))) if rule.objective is not None else None,
            latency=ChangePointProcess.new(runs, boundaries * len(LATENCY_RATIOS))
            if rule.kind == "latency" and boundaries
            else None,
            spread=ChangePointProcess.new(runs, len(RATIOS)) if by_customer(spec, rule) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"regression": self.regression.to_dict()}
        for k in (
            "clear",
            "canary_n",
            "canary_bad",
            "stable_n",
            "stable_bad",
            "objective",
            "stable_objective",
            "peak",
        ):
            v = getattr(self, k)
            out[k] = None if v is None else floats(v)
        out["groups"] = None if self.groups is None else self.groups.to_dict()
        out["latency"] = None if self.latency is None else self.latency.to_dict()
        out["spread"] = None if self.spread is None else self.spread.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricState:
        def opt(k: str) -> Array | None:
            return None if data.get(k) is None else array(data[k])

        return cls(
            regression=ChangePointProcess.from_dict(data["regression"]),
            clear=array(data["clear"]),
            canary_n=array(data["canary_n"]),
            canary_bad=array(data["canary_bad"]),
            stable_n=array(data["stable_n"]),
            stable_bad=array(data["stable_bad"]),
            groups=None if data.get("groups") is None else StickyGroups.from_dict(data["groups"]),
            objective=opt("objective"),
            stable_objective=opt("stable_objective"),
            latency=None if data.get("latency") is None else ChangePointProcess.from_dict(data["latency"]),
            spread=None if data.get("spread") is None else ChangePointProcess.from_dict(data["spread"]),
            peak=opt("peak"),
        )


@dataclass
class JudgeState:
    """Everything the judge remembers, for ``runs`` rollouts at once; plain data round trip."""

    metrics: list[MetricState]
    step: IntArray  # the step the bake counters belong to (-1 before the first)
    step_seconds: Array
    step_canary_n: Array
    srm: Array  # (runs, shifts) cumulative log LR of the canary's request share against the weight
    misrouted: Array  # sticky: requests served by the track their bucket group is not on
    routed: Array
    customers: Array  # sticky: (runs, G+1) distinct customers the router has seen per group (its level)
    # 1 where the last bin's weight was confirmed by every reader when its counts were read: the
    # next bin at the same step was then served wholly at that weight
    settled: Array
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, runs: int, spec: JudgeSpec, boundaries: int = 0) -> JudgeState:
        return cls(
            metrics=[MetricState.new(runs, spec, m, boundaries) for m in spec.metrics],
            step=np.full(runs, -1, dtype=np.int64),
            step_seconds=np.zeros(runs),
            step_canary_n=np.zeros(runs),
            srm=np.zeros((runs, len(SRM_SHIFTS))),
            misrouted=np.zeros(runs),
            routed=np.zeros(runs),
            customers=np.zeros((runs, len(spec.bucket_boundaries) + 1 if spec.sticky else 0)),
            settled=np.zeros(runs),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": [m.to_dict() for m in self.metrics],
            "step": self.step.tolist(),
            "step_seconds": floats(self.step_seconds),
            "step_canary_n": floats(self.step_canary_n),
            "srm": floats(self.srm),
            "misrouted": floats(self.misrouted),
            "routed": floats(self.routed),
            "customers": floats(self.customers),
            "settled": floats(self.settled),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgeState:
        return cls(
            metrics=[MetricState.from_dict(m) for m in data["metrics"]],
            step=np.asarray(data["step"], dtype=np.int64),
            step_seconds=array(data["step_seconds"]),
            step_canary_n=array(data["step_canary_n"]),
            srm=array(data["srm"]),
            misrouted=array(data["misrouted"]),
            routed=array(data["routed"]),
            # stored before the field existed: counted again from the router's next reading
            customers=array(data["customers"]) if "customers" in data else np.zeros((len(data["step"]), 0)),
            # stored before the field existed: the next bin only settles
            settled=array(data.get("settled", [0.0] * len(data["step"]))),
        )


def update(
    state: JudgeState, spec: JudgeSpec, bins: list[BinArrays], seconds: Array, step: IntArray, weight: Array
) -> None:
    """Add one bin of every metric.  ``weight``: the canary share the router applied (nan: unknown)."""
    moved = step != state.step
    state.step_seconds = np.where(moved, 0.0, state.step_seconds) + seconds
    first = bins[0]
    state.step_canary_n = np.where(moved, 0.0, state.step_canary_n) + first.canary_n
    state.step = step.copy()
    known = np.isfinite(weight) & (weight > 0) & (weight < 1)
    w = np.where(known, weight, 0.5)
    # the sample-ratio checks count only bins served wholly at one confirmed weight: a bin in
    # which the step moved, or read before every reader confirmed, mixes two weights' routing
    steady = np.isfinite(weight) & ~moved & (state.settled > 0)
    state.settled = np.isfinite(weight).astype(float)
    if not spec.sticky:
        shifted = np.clip(w[:, None] * np.asarray(SRM_SHIFTS), 1e-9, 1 - 1e-9)
        srm = first.canary_n[:, None] * np.log(shifted / w[:, None]) + first.stable_n[:, None] * (
            np.log1p(-shifted) - np.log1p(-w[:, None])
        )
        state.srm += np.where((known & steady)[:, None], srm, 0.0)
    elif first.group_n is not None and first.group_canary_n is not None:
        on_all = canary_groups(step, first.group_n.shape[1])
        wrong = np.where(on_all, first.group_n - first.group_canary_n, first.group_canary_n).sum(axis=1)
        state.misrouted += np.where(steady, wrong, 0.0)
        state.routed += np.where(steady, first.group_n.sum(axis=1), 0.0)
    if spec.sticky and first.group_customers is not None:
        # a level, not an increase: a router that restarted counts afresh, and its count replaces
        seen = first.group_customers.sum(axis=1, keepdims=True) > 0
        if state.customers.shape != first.group_customers.shape:
            state.customers = np.zeros_like(first.group_customers)
        state.customers = np.where(seen, first.group_customers, state.customers)
    for rule, ms, b in zip(spec.metrics, state.metrics, bins, strict=True):
        realised = np.where(
            (b.canary_n > 0) & (b.stable_n > 0), b.canary_n / np.maximum(b.canary_n + b.stable_n, 1), 0.0
        )
        share = np.where(known, w, realised) if not spec.sticky else realised
        seed = bin_order_seed(
            ms.canary_n + ms.stable_n,
            ms.canary_bad + ms.stable_bad,
            b.canary_n + b.stable_n,
            b.canary_bad + b.stable_bad,
        )
        floor = EARLIER_STEP_SHARE * math.log(1 / spec.alpha)  # the lowest level a verdict reads
        # event by event where the share is the design weight (eprocess: "Within a bin")
        by_design = known & (not spec.sticky)
        ms.peak = _judged(ms.regression, b, share, seconds, seed, floor, by_design)
        if ms.spread is not None:  # sticky: a realised split, read at the bin's end
            ms.spread.update(share_log_lr(b.canary_bad, b.stable_bad, null_share(share), RATIOS), seconds)
        ms.clear -= share_log_lr(b.canary_bad, b.stable_bad, share, np.asarray([rule.min_regression]))[:, 0]
        if ms.groups is not None and b.group_n is not None and b.group_bad is not None:
            ms.groups.update(b.group_n, b.group_bad, canary_groups(step, ms.groups.groups + 1)[:, :-1])
        if ms.objective is not None and ms.stable_objective is not None and rule.objective is not None:
            ms.objective += objective_log_lr(b.canary_n, b.canary_bad, rule.objective, DEFAULT_RATIOS)
            ms.stable_objective += objective_log_lr(b.stable_n, b.stable_bad, rule.objective, DEFAULT_RATIOS)
        if ms.latency is not None:
            if b.slower_canary is not None and b.slower_stable is not None:
                cols = [
                    share_log_lr(b.slower_canary[:, j], b.slower_stable[:, j], share, LATENCY_RATIOS)
                    for j in range(b.slower_canary.shape[1])
                ]
                ms.latency.update(np.concatenate(cols, axis=1), seconds)
            else:
                ms.latency.update(np.zeros_like(ms.latency.log_m0), seconds)
        ms.canary_n += b.canary_n
        ms.canary_bad += b.canary_bad
        ms.stable_n += b.stable_n
        ms.stable_bad += b.stable_bad


def _judged(
    process: ChangePointProcess,
    b: BinArrays,
    share: Array,
    seconds: Array,
    seed: list[int],
    floor: float,
    ordered: npt.NDArray[np.bool_],
) -> Array:
    """Add the bin to a regression test; its largest log e at any of the bin's events (where
    ``ordered``) or its end."""
    process.open_due()
    peak = peak_within_bin(process, b.canary_bad, b.stable_bad, share, RATIOS, RATIO_WEIGHTS, seed, floor, ordered)
    process.update(share_log_lr(b.canary_bad, b.stable_bad, share, RATIOS), seconds)
    out: Array = np.maximum(peak, process.log_e(RATIO_WEIGHTS))
    return out


def canary_groups(step: IntArray, groups: int) -> npt.NDArray[np.bool_]:
    """(runs, groups): the bucket groups the canary serves at ``step`` (group g joins at step g);
    ``groups`` counts the reference group, last, which never does."""
    out: npt.NDArray[np.bool_] = np.arange(groups)[None, :] <= step[:, None]
    out[:, -1] = False
    return out
