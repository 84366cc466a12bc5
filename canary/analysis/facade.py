"""``RolloutJudge``: the one object the controller calls, per rollout, on every bin.

    judge = RolloutJudge.new(JudgeSpec.from_mapping(spec_mapping))
    decision = judge.observe(bins, StepContext(step=0, seconds=1.0, weight=0.05))
    stored = judge.to_dict()              # persist with the rollout on every bin
    judge = RolloutJudge.from_dict(stored)  # after a restart or a lease handoff: the same e-process

``bins`` holds one :class:`MetricBin` per metric of the spec (by name): the bin's counts per track
and, where routing is sticky, per bucket group (``canary.analysis.sticky`` says exactly what the
router must count).  ``StepContext.weight`` is the canary share the router confirmed it applied
in this bin (per-request routing; leave it ``None`` when unknown and the bin's realised split is
used).  During the mirror phase call :meth:`RolloutJudge.observe_mirror`.  The verdicts and the
statistics are ``canary.analysis.rollout`` run for one rollout.  ``inconclusive`` means the step
reached ``max_seconds``: the controller applies ``spec.on_inconclusive``; it is never a judge's
rollback.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from canary.analysis import reading, rollout
from canary.analysis.customers import canary_share, group_widths
from canary.analysis.intervals import rate_ratio_interval
from canary.analysis.mirror import NO_BASELINE_RATE, MirrorBin, MirrorState
from canary.analysis.rollout import CODES, BinArrays, JudgeState, Verdict
from canary.analysis.spec import JudgeSpec, MetricRule, StepRule
from canary.analysis.sticky_fallback import SPREAD

STATE_VERSION = 1
STICKY_STATISTIC = "e-value per sticky bucket group against its own history (universal inference)"
REQUEST_STATISTIC = "e-value of 'canary no worse' (change-point mixture likelihood ratio)"
# a sticky spec judged per request (no bucket-group counts, or a first group without a history on
# stable before the canary): valid if the canary's customers fail at most SPREAD times as often as
# stable's, and said so (canary.analysis.sticky_fallback)
FALLBACK_WORDS = (
    f"sticky routing judged per request (no bucket-group counts): assumes the canary's customers fail "
    f"at most {SPREAD:g}x as often as stable's"
)
NO_HISTORY_WORDS = (
    "sticky routing judged per request: the first bucket group had too few bad events on stable before "
    f"the canary; assumes its customers fail at most {SPREAD:g}x as often as stable's"
)
MAX_COUNT = 10**12  # per bin: anything larger is a broken source, refused


@dataclass(frozen=True)
class TrackCounts:
    requests: int
    bad: int


@dataclass(frozen=True)
class GroupCounts:
    """A sticky bucket group's requests (whatever track served them), bad events, canary-served, in
    the bin; and the distinct customers the router has seen in the group so far (a level)."""

    requests: int
    bad: int
    canary_requests: int
    customers: int = 0


@dataclass(frozen=True)
class SlowerThan:
    """Latency histogram: requests slower than ``le_ms`` per track (one boundary of the router's buckets)."""

    le_ms: float
    canary: int
    stable: int


@dataclass(frozen=True)
class MetricBin:
    metric: str
    canary: TrackCounts
    stable: TrackCounts
    groups: tuple[GroupCounts, ...] = ()  # sticky: len(spec.steps) + 1 groups, the reference last
    slower: tuple[SlowerThan, ...] = ()  # latency: the same boundaries on every bin


@dataclass(frozen=True)
class StepContext:
    # 0-based index of the spec's step the bin belongs to; -1 before the canary takes traffic
    # (pending, mirroring): sticky bucket groups are then measured on stable, their history
    step: int
    seconds: float = 1.0  # the bin's measured length
    weight: float | None = None  # canary share (0-1) the router applied, per-request routing


@dataclass(frozen=True)
class RatioInterval:
    estimate: float
    low95: float
    high95: float


@dataclass(frozen=True)
class MetricEvidence:
    metric: str
    statistic: str
    e_value: float
    threshold: float
    canary: TrackCounts
    stable: TrackCounts
    ratio: RatioInterval | None
    no_regression_e_value: float  # against "min_regression or more worse"; passes at pass_threshold
    pass_threshold: float
    within_tolerance: bool
    power: str  # what the step can rule out at its traffic, in words
    words: str = ""  # this metric's part of the decision's reason


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    evidence: tuple[MetricEvidence, ...]
    held: str = ""  # a sample-ratio mismatch holds the rollout: why, with the numbers


class RolloutJudge:
    def __init__(self, spec: JudgeSpec, state: JudgeState, mirror: MirrorState, boundaries: int) -> None:
        self.spec = spec
        self.state = state
        self.mirror = mirror
        self.boundaries = boundaries
        self._asked: float | None = None  # the weight of the last bin, for the hold's words

    @classmethod
    def new(cls, spec: JudgeSpec, histogram_boundaries: int = 0) -> RolloutJudge:
        return cls(spec, JudgeState.new(1, spec, histogram_boundaries), MirrorState.new(1), histogram_boundaries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "spec": self.spec.to_dict(),
            "boundaries": self.boundaries,
            "state": self.state.to_dict(),
            "mirror": self.mirror.to_dict(),
        }

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> RolloutJudge:
        if not isinstance(stored, dict) or stored.get("version") != STATE_VERSION:
            raise ValueError(f"judge state: version {STATE_VERSION} expected, got {stored.get('version')!r}")
        return cls(
            JudgeSpec.from_dict(stored["spec"]),
            JudgeState.from_dict(stored["state"]),
            MirrorState.from_dict(stored["mirror"]),
            int(stored["boundaries"]),
        )

    def history_ready(self) -> bool:
        """Every sticky metric's first bucket group has a usable history on stable (or the source
        gives no group counts): the group test, not the request-level fallback, can judge from the
        first step.  Decided on stable's bins alone (``StepContext.step == -1``)."""
        return bool(rollout.history_ready(self.state)[0])

    def observe(self, bins: list[MetricBin] | tuple[MetricBin, ...], context: StepContext) -> Decision:
        by_name = {b.metric: b for b in bins}
        missing = [m.name for m in self.spec.metrics if m.name not in by_name]
        if missing:
            raise ValueError(f"bins: no counts for metric {missing[0]!r}")
        if not -1 <= context.step < len(self.spec.steps):
            raise ValueError(f"context.step: must be -1 to {len(self.spec.steps) - 1}, got {context.step}")
        arrays = [self._arrays(by_name[m.name]) for m in self.spec.metrics]
        weight = np.asarray([math.nan if context.weight is None else context.weight / 1.0])
        rollout.update(
            self.state,
            self.spec,
            arrays,
            np.asarray([max(context.seconds, 0.0)]),
            np.asarray([context.step], dtype=np.int64),
            weight,
        )
        code = int(reading.verdicts(self.state, self.spec)[0])
        self._asked = context.weight
        return self._decision(CODES[code])

    @property
    def threshold(self) -> float:
        """The e-value at which any of the rollout's tests fails the canary (its share of alpha)."""
        return float(rollout.step_tests(self.spec, self.state)[0]) / self.spec.alpha

    def observe_mirror(self, counts: MirrorBin, seconds: float = 1.0) -> Decision:
        if self.spec.mirror is None:
            raise ValueError("the spec has no mirror phase")
        # without a baseline, differences are tested against the share the spec allows
        rule = self.spec.mirror
        self.mirror.update(counts, seconds, rule.max_different_share or NO_BASELINE_RATE, rule.baseline)
        verdict, reason = self.mirror.verdict(self.spec, rollout.total_tests(self.spec, self.state))
        return Decision(verdict, reason, ())

    def _arrays(self, b: MetricBin) -> BinArrays:
        for where, n, bad in (("canary", b.canary.requests, b.canary.bad), ("stable", b.stable.requests, b.stable.bad)):
            if not 0 <= bad <= n <= MAX_COUNT:
                raise ValueError(f"{b.metric}.{where}: counts must be 0 <= bad <= requests, got {bad} of {n}")
        counts = (b.canary.requests, b.canary.bad, b.stable.requests, b.stable.bad)
        out = BinArrays(*(np.asarray([float(v)]) for v in counts))
        if self.spec.sticky and b.groups:
            if len(b.groups) != len(self.spec.steps) + 1:
                raise ValueError(f"{b.metric}.groups: {len(self.spec.steps) + 1} bucket groups expected")
            if not all(0 <= g.customers <= MAX_COUNT for g in b.groups):
                raise ValueError(f"{b.metric}.groups: customers must be 0 <= customers <= {MAX_COUNT}")
            out.group_n = np.asarray([[g.requests for g in b.groups]], dtype=np.float64)
            out.group_bad = np.asarray([[g.bad for g in b.groups]], dtype=np.float64)
            out.group_canary_n = np.asarray([[g.canary_requests for g in b.groups]], dtype=np.float64)
            out.group_customers = np.asarray([[g.customers for g in b.groups]], dtype=np.float64)
        if b.slower:
            if len(b.slower) != self.boundaries:
                raise ValueError(f"{b.metric}.slower: {self.boundaries} histogram boundaries expected")
            out.slower_canary = np.asarray([[s.canary for s in b.slower]], dtype=np.float64)
            out.slower_stable = np.asarray([[s.stable for s in b.slower]], dtype=np.float64)
        return out

    def _decision(self, verdict: Verdict) -> Decision:
        spec, state = self.spec, self.state
        tests = rollout.step_tests(spec, state)
        threshold = float(tests[0]) / spec.alpha
        evidence: list[MetricEvidence] = []
        words: list[str] = []
        for rule, ms in zip(spec.metrics, state.metrics, strict=True):
            rd = reading.read_metric(spec, rule, ms, tests)
            c = TrackCounts(int(ms.canary_n[0]), int(ms.canary_bad[0]))
            s = TrackCounts(int(ms.stable_n[0]), int(ms.stable_bad[0]))
            interval = rate_ratio_interval(c.requests, c.bad, s.requests, s.bad)
            power = self._power_words(rule)
            evidence.append(
                MetricEvidence(
                    metric=rule.name,
                    statistic=STICKY_STATISTIC if _informed(ms) else REQUEST_STATISTIC,
                    e_value=_exp(float(rd.log_e[0])),
                    threshold=threshold,
                    canary=c,
                    stable=s,
                    ratio=None if interval is None else RatioInterval(*interval),
                    no_regression_e_value=_exp(float(rd.log_clear[0])),
                    pass_threshold=1 / spec.pass_alpha,
                    within_tolerance=bool(rd.within_tolerance[0]),
                    power=power,
                )
            )
            text = (
                f"canary {c.bad} bad of {c.requests} vs stable {s.bad} of {s.requests}; "
                f"e-value {_num(_exp(float(rd.log_e[0])))} (fails at {threshold:g})"
            )
            if rollout.by_customer(spec, rule) and (ms.groups is None or not ms.groups.seen):
                text += f" [{FALLBACK_WORDS}]"
            elif rollout.by_customer(spec, rule) and not _informed(ms):
                text += f" [{NO_HISTORY_WORDS}]"
            if bool(rd.blocked[0]):
                text += "; both tracks miss the objective: not rolling back, not passing"
            if verdict is not Verdict.FAIL and not rd.ruled_out[0] and state.step[0] >= len(spec.steps) - 1:
                text += f"; {power}"
            evidence[-1] = dataclasses.replace(evidence[-1], words=text)
            words.append(f"{rule.name}: {text}")
        held = ""
        if verdict is Verdict.CONTINUE and bool(reading.srm_mismatch(state, spec)[0]):
            first = state.metrics[0]
            seen = float(first.canary_n[0]) / max(float(first.canary_n[0] + first.stable_n[0]), 1.0)
            asked = self._asked
            numbers = f" ({seen:.2%} of requests on the canary, {asked:.2%} asked)" if asked is not None else ""
            if spec.sticky:
                numbers = f" ({int(state.misrouted[0])} of {int(state.routed[0])} requests on the wrong track"
                if bool(reading.customers_skewed(state, spec)[0]):
                    share, asked_share = canary_share(state.customers, group_widths(spec), state.step)
                    numbers += (
                        f"; {float(share[0]):.2%} of the {int(state.customers[0].sum())} customers seen are in "
                        f"the canary's bucket groups, which hold {float(asked_share[0]):.2%} of the hash space"
                    )
                numbers += ")"
            held = "held: the canary's share of traffic does not match the weight asked" + numbers
            words.insert(0, held)
        head = {
            Verdict.FAIL: "canary is worse than stable",
            Verdict.PASS: "step passed",
            Verdict.INCONCLUSIVE: f"step not conclusive after {state.step_seconds[0]:.0f} s",
            Verdict.CONTINUE: "judging",
        }[verdict]
        return Decision(verdict, head + ": " + "; ".join(words), tuple(evidence), held)

    def _power_words(self, rule: MetricRule) -> str:
        step = self.spec.steps[int(np.clip(self.state.step[0], 0, len(self.spec.steps) - 1))]
        ms = self.state.metrics[self.spec.metrics.index(rule)]
        seconds = max(float(self.state.step_seconds[0]), 1e-9)
        canary_rps = float(self.state.step_canary_n[0]) / seconds
        total = float(ms.canary_n[0] + ms.stable_n[0])
        stable_rps = canary_rps * (float(ms.stable_n[0]) / max(float(ms.canary_n[0]), 1.0)) if total else 0.0
        rate = max(float(ms.stable_bad[0]) / max(float(ms.stable_n[0]), 1.0), rule.rate_floor)
        r0 = rule_out_ratio(canary_rps, stable_rps, rate, step, self.spec.pass_alpha)
        if r0 <= rule.min_regression:
            return f"at {canary_rps:.3g} req/s this step can rule out {rule.min_regression:g}x"
        shown = "no regression at all" if math.isinf(r0) else f"{r0:.3g}x or more"
        return f"at {canary_rps:.3g} req/s this step can only rule out {shown}"


def rule_out_ratio(canary_rps: float, stable_rps: float, rate: float, step: StepRule, pass_alpha: float) -> float:
    """The smallest regression the step's ``max_seconds`` at this traffic rules out in expectation."""
    if canary_rps <= 0 or stable_rps <= 0:
        return math.inf
    pi = canary_rps / (canary_rps + stable_rps)
    need = math.log(1 / pass_alpha)

    def expected(r0: float) -> float:
        per_second = rate * ((canary_rps + stable_rps) * math.log1p((r0 - 1) * pi) - canary_rps * math.log(r0))
        return per_second * step.max_seconds

    lo, hi = 1.0, 1e6
    if expected(hi) < need:
        return math.inf
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if expected(mid) < need else (lo, mid)
    return hi


def _informed(ms: rollout.MetricState) -> bool:
    return ms.groups is not None and ms.groups.seen and bool(ms.groups.informed()[0])


def _exp(v: float) -> float:
    return math.exp(min(v, 700.0))


def _num(value: float) -> str:
    return f"{value:.3g}" if value < 1e6 else f"10^{math.log10(value):.1f}"
