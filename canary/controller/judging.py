"""Every call from the controller into the judge (``canary/analysis``) goes through this module.

Per rollout a :class:`RolloutJudging` holds one :class:`~canary.analysis.facade.RolloutJudge`
(all the spec's metrics and the mirror phase under one alpha, ``JudgeSpec`` built from the
controller's ``RolloutSpec``), a ``BinMaker`` per metric that turns the provider's cumulative
readings into bins with their measured length, and the latest answers.  It is plain data with a
versioned ``to_dict``/``from_dict``, stored with the rollout after every bin, so a restarted
controller continues the same e-process.  Each bin is given the step its counts belong to (the
step the data plane confirmed; -1 before the canary takes traffic, so sticky bucket groups gather
their history on stable) and the canary weight every reader confirmed.

The judge's ``inconclusive`` (a step at ``max_seconds``) is answered as ``continue`` here: the
machine's own clock for the same ``max_seconds`` (moved on while the rollout was held, restarted
by a resume) applies ``on_inconclusive``; a resumed step must not be re-paused at once by a judge
that counts the step's seconds since it began.

After promotion (the watch) the roles are reversed: the promoted release is judged against the
old one, which keeps a holdback share of traffic, by a second judge with a one-step spec, and a
change detector follows the promoted release's own bad rate against stable's before promotion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from canary.analysis.changepoint import ChangeDetector
from canary.analysis.facade import (
    Decision,
    GroupCounts,
    MetricBin,
    MetricEvidence,
    RolloutJudge,
    SlowerThan,
    StepContext,
)
from canary.analysis.facade import TrackCounts as JudgeCounts
from canary.analysis.mirror import MirrorBin
from canary.analysis.rollout import Verdict as JudgeVerdict
from canary.analysis.spec import JudgeSpec, MetricRule, MirrorRule, OnInconclusive, StepRule
from canary.controller.machine import HISTORY_WAIT, Judgement, Verdict
from canary.controller.spec import Metric, MirrorBaseline, RolloutSpec
from canary.providers.base import Bin, BinMaker, TrackCounts
from canary.router.stats import BUCKETS

STATE_VERSION = 2
DETECTOR_MAX_REFERENCE = 0.5  # the change detector needs a reference bad rate below 1
LATENCY_BOUNDARIES = len(BUCKETS)  # the router's histogram: one "slower than" per bucket boundary


def judge_spec(spec: RolloutSpec) -> JudgeSpec:
    """The judge's view of a rollout spec; the rollout's alpha is the smallest of its metrics'."""
    return JudgeSpec(
        metrics=tuple(_rule(m) for m in spec.metrics),
        steps=tuple(StepRule(s.weight, s.min_requests, s.min_seconds, s.max_seconds) for s in spec.steps),
        alpha=min((m.alpha for m in spec.metrics), default=0.01),
        on_inconclusive=OnInconclusive(spec.on_inconclusive.value),
        sticky=bool(spec.sticky),
        history_seconds=spec.history_seconds,
        mirror=None
        if spec.mirror is None
        else MirrorRule(
            spec.mirror.min_compared,
            spec.mirror.min_seconds,
            spec.mirror.max_seconds,
            spec.mirror.max_different_share,
            baseline=spec.mirror.baseline is MirrorBaseline.STABLE,
        ),
    )


def bucket_boundaries(spec: RolloutSpec) -> tuple[int, ...]:
    """The bucket groups the routers count for a sticky rollout (empty: none, or not usable)."""
    if not spec.sticky:
        return ()
    cuts = judge_spec(spec).bucket_boundaries
    rising = all(a < b for a, b in zip((0, *cuts), (*cuts, 10_000), strict=True))
    return cuts if rising else ()


def watch_spec(spec: RolloutSpec) -> JudgeSpec:
    """The watch's reversed test: the promoted release on the 'canary' side with its share of traffic."""
    base = judge_spec(spec)
    step = StepRule(100.0 - spec.watch_holdback, min_requests=0, min_seconds=0.0, max_seconds=1e7)
    return JudgeSpec(metrics=base.metrics, steps=(step,), alpha=base.alpha, sticky=False)


def _rule(m: Metric) -> MetricRule:
    return MetricRule(m.name, m.kind, m.min_regression, m.rate_floor, m.tolerance, m.objective, m.threshold_ms)


def _boundaries(spec: RolloutSpec) -> int:
    """The whole-histogram latency test, only where routing is per request: with sticky customers
    the canary's fixed set of customers may be slower on both releases (bigger images, bigger
    imports), and the histogram test, per request, would take that for a slower release (the
    quick replay rolled back a healthy reworked release so).  Sticky specs judge latency by
    ``threshold_ms`` alone."""
    per_request = not spec.sticky
    return LATENCY_BOUNDARIES if per_request and any(m.kind == "latency" for m in spec.metrics) else 0


@dataclass
class RolloutJudging:
    judge: RolloutJudge | None = None
    watch_judge: RolloutJudge | None = None
    bins: dict[str, BinMaker] = field(default_factory=dict)  # per metric (and "mirror")
    watch_bins: dict[str, BinMaker] = field(default_factory=dict)
    detectors: dict[str, ChangeDetector] = field(default_factory=dict)
    # the held-back old release's counts since promotion, per metric: a rise both releases share
    # (a loaded machine, a shared database) is not the promoted release's
    held_back: dict[str, tuple[int, int]] = field(default_factory=dict)
    last: dict[str, Judgement] = field(default_factory=dict)  # each step metric's latest answer
    last_watch: dict[str, Judgement] = field(default_factory=dict)  # the watch's, per metric
    last_mirror: Judgement | None = None
    observed: int = 0  # bins given to the judge (steps and mirror), and their seconds
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "judge": None if self.judge is None else self.judge.to_dict(),
            "watch_judge": None if self.watch_judge is None else self.watch_judge.to_dict(),
            "bins": {k: v.to_dict() for k, v in self.bins.items()},
            "watch_bins": {k: v.to_dict() for k, v in self.watch_bins.items()},
            "detectors": {k: v.to_dict() for k, v in self.detectors.items()},
            "held_back": {k: list(v) for k, v in self.held_back.items()},
            "last": {k: _judgement_dict(j) for k, j in self.last.items()},
            "last_watch": {k: _judgement_dict(j) for k, j in self.last_watch.items()},
            "last_mirror": None if self.last_mirror is None else _judgement_dict(self.last_mirror),
            "observed": self.observed,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutJudging:
        if data.get("version") != STATE_VERSION:
            return cls()  # an unknown form: start afresh (delays a verdict, never makes one wrongly)
        judge, watch = data.get("judge"), data.get("watch_judge")
        return cls(
            judge=None if judge is None else RolloutJudge.from_dict(judge),
            watch_judge=None if watch is None else RolloutJudge.from_dict(watch),
            bins={k: BinMaker.from_dict(v) for k, v in data.get("bins", {}).items()},
            watch_bins={k: BinMaker.from_dict(v) for k, v in data.get("watch_bins", {}).items()},
            detectors={k: ChangeDetector.from_dict(v) for k, v in data.get("detectors", {}).items()},
            held_back={k: (int(v[0]), int(v[1])) for k, v in data.get("held_back", {}).items()},
            last={k: _judgement(v) for k, v in data.get("last", {}).items()},
            last_watch={k: _judgement(v) for k, v in data.get("last_watch", {}).items()},
            last_mirror=_judgement(data["last_mirror"]) if data.get("last_mirror") else None,
            observed=int(data.get("observed", 0)),
            seconds=float(data.get("seconds", 0.0)),
        )

    def rollout_judge(self, spec: RolloutSpec) -> RolloutJudge:
        if self.judge is None:
            self.judge = RolloutJudge.new(judge_spec(spec), _boundaries(spec))
        return self.judge


def _judgement_dict(j: Judgement) -> dict[str, Any]:
    return {"verdict": j.verdict.value, "reason": j.reason, "evidence": j.evidence}


def _judgement(v: dict[str, Any]) -> Judgement:
    return Judgement(Verdict(v["verdict"]), str(v["reason"]), dict(v.get("evidence", {})))


def judge_step(
    judging: RolloutJudging,
    spec: RolloutSpec,
    step: int,
    readings: dict[str, TrackCounts],
    now: float,
    weight: float | None = None,
) -> dict[str, Judgement]:
    """One bin of every step metric (``readings`` by metric name, cumulative as the provider keeps
    them); ``step`` -1 before the canary takes traffic; ``weight`` the confirmed canary percent."""
    judge = judging.rollout_judge(spec)
    bins = {m.name: judging.bins.setdefault(m.name, BinMaker()).next_bin(readings[m.name], now) for m in spec.metrics}
    seconds = next(iter(bins.values())).seconds if bins else 0.0
    metric_bins = [_metric_bin(judge, m, bins[m.name]) for m in spec.metrics]
    context = StepContext(step=step, seconds=seconds, weight=None if weight is None else weight / 100.0)
    decision = judge.observe(metric_bins, context)
    judging.observed += 1
    judging.seconds += seconds
    answers = _answers(decision)
    if step >= 0:
        judging.last.update(answers)
    return answers


def history_wait(judging: RolloutJudging, spec: RolloutSpec, waited: float) -> str:
    """Why a sticky rollout whose canary is ready stays in pending (empty: it goes on): the spec's
    ``sticky.history_seconds`` lets the first bucket group gather its history on stable, so the
    group test, not the request-level fallback, judges the first step.  It ends as soon as the
    history is usable, or the source turns out to give no group counts, or after the limit."""
    limit = spec.history_seconds
    if waited >= limit:
        return ""
    if judging.judge is not None and judging.observed >= 2 and judging.judge.history_ready():
        return ""  # the first reading only starts the bins: a real bin is needed to say
    return f"{HISTORY_WAIT} on stable before the first step (at most {limit:g} s)"


def _metric_bin(judge: RolloutJudge, metric: Metric, b: Bin) -> MetricBin:
    groups: tuple[GroupCounts, ...] = ()
    if judge.spec.sticky and len(b.groups) == len(judge.spec.steps) + 1:
        groups = tuple(GroupCounts(g.requests, g.bad, g.canary_requests, g.customers) for g in b.groups)
    slower: tuple[SlowerThan, ...] = ()
    if metric.kind == "latency" and judge.boundaries and len(b.slower) == judge.boundaries:
        slower = tuple(SlowerThan(s.le_ms, s.canary, s.stable) for s in b.slower)
    return MetricBin(
        metric.name,
        JudgeCounts(b.canary.events, b.canary.bad),
        JudgeCounts(b.stable.events, b.stable.bad),
        groups,
        slower,
    )


def _answers(decision: Decision) -> dict[str, Judgement]:
    """The rollout's one decision, per metric as the machine reads it: a failure names the metrics
    whose tests crossed; a pass passes them all; inconclusive is left to the machine's clock."""
    head = decision.reason.split(": ", 1)[0]
    crossed = {e.metric for e in decision.evidence if e.e_value >= e.threshold}
    out = {}
    for e in decision.evidence:
        if decision.verdict is JudgeVerdict.FAIL:
            verdict = Verdict.FAIL if (e.metric in crossed or not crossed) else Verdict.CONTINUE
        elif decision.verdict is JudgeVerdict.PASS:
            verdict = Verdict.PASS
        else:
            verdict = Verdict.CONTINUE
        words = f"{head}: {e.words}" if verdict is not Verdict.CONTINUE or not decision.held else decision.held
        out[e.metric] = Judgement(verdict, words, evidence_dict(e, decision.verdict))
    return out


def evidence_dict(e: MetricEvidence, verdict: JudgeVerdict) -> dict[str, Any]:
    """The evidence as the API, ``canary why`` and the replay's recorder read it."""

    def track(c: JudgeCounts) -> dict[str, Any]:
        return {"requests": c.requests, "bad": c.bad, "rate": c.bad / c.requests if c.requests else 0.0}

    return {
        "judge_verdict": verdict.value,
        "counts": {"canary": track(e.canary), "stable": track(e.stable)},
        "regression": {
            "statistic": e.statistic,
            "e_value": e.e_value,
            "log_e": math.log(e.e_value) if e.e_value > 0 else -math.inf,
            "threshold": e.threshold,
        },
        "ratio": None
        if e.ratio is None
        else {"estimate": e.ratio.estimate, "low95": e.ratio.low95, "high95": e.ratio.high95},
        "no_regression": {"e_value": e.no_regression_e_value, "threshold": e.pass_threshold},
        "within_tolerance": e.within_tolerance,
        "power": e.power,
    }


def judge_mirror(judging: RolloutJudging, spec: RolloutSpec, reading: TrackCounts, now: float) -> Judgement:
    """The mirror phase: the canary's differences (the provider's canary side), judged against a
    baseline's (its stable side: the noise) where the router asks one, else against the share
    the spec allows."""
    judge = judging.rollout_judge(spec)
    b = judging.bins.setdefault("mirror", BinMaker()).next_bin(reading, now)
    mb = MirrorBin(b.canary.events, b.canary.bad, baseline_compared=b.stable.events, baseline_different=b.stable.bad)
    d = judge.observe_mirror(mb, b.seconds)
    m = judge.mirror
    evidence = {
        "compared": int(m.compared[0]),
        "different": int(m.different[0]),
        "baseline_compared": int(m.baseline_compared[0]),
        "baseline_different": int(m.baseline_different[0]),
        "max_different_share": spec.mirror.max_different_share if spec.mirror else 0.0,
        "seconds": float(m.seconds[0]),
        "e_value": math.exp(min(float(m.log_e()[0]), 700.0)),
        "threshold": judge.threshold,
    }
    verdict = {JudgeVerdict.FAIL: Verdict.FAIL, JudgeVerdict.PASS: Verdict.PASS}.get(d.verdict, Verdict.CONTINUE)
    judging.last_mirror = j = Judgement(verdict, d.reason, evidence)
    return j


def judge_watch(
    judging: RolloutJudging, spec: RolloutSpec, readings: dict[str, TrackCounts], now: float, weight: float | None
) -> Judgement | None:
    """After promotion: ``readings`` as the router counts them, the old release on the canary track
    (its holdback) and the promoted one on stable.  Answers the first failure (the reversed test or
    a change detector), or None; a pass means nothing here."""
    bins = {
        m.name: judging.watch_bins.setdefault(m.name, BinMaker()).next_bin(readings[m.name], now) for m in spec.metrics
    }
    reversed_: dict[str, Judgement] = {}
    if spec.watch_holdback > 0:
        if judging.watch_judge is None:
            judging.watch_judge = RolloutJudge.new(watch_spec(spec))
        seconds = next(iter(bins.values())).seconds if bins else 0.0
        flipped = [
            MetricBin(m.name, JudgeCounts(b.stable.events, b.stable.bad), JudgeCounts(b.canary.events, b.canary.bad))
            for m, b in ((m, bins[m.name]) for m in spec.metrics)
        ]
        promoted_share = None if weight is None else (100.0 - weight) / 100.0
        reversed_ = _answers(judging.watch_judge.observe(flipped, StepContext(0, seconds, promoted_share)))
    first: Judgement | None = None
    for metric in spec.metrics:
        b = bins[metric.name]
        detector = judging.detectors.get(metric.name)
        if detector is None:
            detector = judging.detectors[metric.name] = ChangeDetector(_reference_rate(judging, metric))
        detector.update(b.stable.events, b.stable.bad)
        old_n, old_bad = judging.held_back.get(metric.name, (0, 0))
        old_n, old_bad = judging.held_back[metric.name] = (old_n + b.canary.events, old_bad + b.canary.bad)
        rev = reversed_.get(metric.name)
        evidence = {
            "reversed": rev.evidence if rev else {},
            "change_detector": {
                "reference_rate": detector.reference_rate,
                "requests": detector.requests,
                "bad": detector.bad,
                "log_statistic": detector.log_statistic if math.isfinite(detector.log_statistic) else None,
                "log_threshold": math.log(detector.threshold),
            },
        }
        if rev is not None and rev.verdict == Verdict.FAIL:
            j = Judgement(
                Verdict.FAIL,
                f"{metric.name}: promoted release worse than the held-back old one: {rev.reason}",
                evidence,
            )
        elif detector.alarm and shared_rise(detector, old_n, old_bad):
            j = Judgement(
                Verdict.CONTINUE,
                f"{metric.name}: bad rate rose to {detector.bad} of {detector.requests} since promotion, and the "
                f"held-back old release's with it ({old_bad} of {old_n}): a cause both share, not the release",
                evidence,
            )
        elif detector.alarm:
            j = Judgement(
                Verdict.FAIL,
                f"{metric.name}: bad rate rose to {detector.bad} of {detector.requests} since promotion "
                f"(was {detector.reference_rate:.3g} before): change detector fired",
                evidence,
            )
        else:
            j = Judgement(
                Verdict.CONTINUE, f"{metric.name}: watching ({detector.bad} bad of {detector.requests})", evidence
            )
        judging.last_watch[metric.name] = j
        if j.verdict == Verdict.FAIL and first is None:
            first = j
    return first


SHARED_MIN_BAD = 3  # the old release's bad events before its rise can excuse the promoted one's


def shared_rise(detector: ChangeDetector, old_n: int, old_bad: int) -> bool:
    """Did the held-back old release's bad rate rise with the promoted one's?  At least half the
    promoted release's bad share since promotion, on a few bad events, and above the rate both
    had before: then the change detector's alarm (an absolute rate) is the world's, not the
    release's; the reversed test, relative, still rolls back a release worse than the old one."""
    if old_n <= 0 or old_bad < SHARED_MIN_BAD:
        return False
    old_share, new_share = old_bad / old_n, detector.bad / max(detector.requests, 1)
    return old_share >= 0.5 * new_share and old_share > detector.reference_rate


def _reference_rate(judging: RolloutJudging, metric: Metric) -> float:
    """Stable's bad rate during the rollout (as the step judge counted it), floored at the metric's floor."""
    rate = 0.0
    if judging.judge is not None:
        names = [m.name for m in judging.judge.spec.metrics]
        if metric.name in names:
            ms = judging.judge.state.metrics[names.index(metric.name)]
            n, bad = float(ms.stable_n[0]), float(ms.stable_bad[0])
            rate = bad / n if n else 0.0
    return min(max(rate, metric.rate_floor), DETECTOR_MAX_REFERENCE)
