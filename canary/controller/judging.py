"""Every call from the controller into the judge (``canary/analysis``) goes through this module.

Per rollout a :class:`RolloutJudging` keeps, per metric, the judge's state and the last reading
(for bins): plain data with a versioned ``to_dict``/``from_dict``, stored with the rollout after
every bin, so a restarted controller continues the same e-process.  Each bin carries its measured
length from the controller's clock.  It answers with :class:`~canary.controller.machine.Judgement`
(verdict, reason, evidence) for a step, for the mirror phase, and for the watch after promotion,
where the roles are reversed (the promoted release is judged against the old one, which keeps a
holdback share of traffic) and a change detector watches the promoted release's own bad rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from canary.analysis.changepoint import ChangeDetector
from canary.analysis.judge import JudgeConfig, MetricState, judge
from canary.controller.machine import Judgement, Verdict
from canary.controller.spec import Metric, RolloutSpec
from canary.providers.base import BinMaker, TrackCounts

STATE_VERSION = 1
DETECTOR_MAX_REFERENCE = 0.5  # the change detector needs a reference bad rate below 1


@dataclass
class MetricJudging:
    state: MetricState = field(default_factory=MetricState)
    bins: BinMaker = field(default_factory=BinMaker)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.to_dict(), "bins": self.bins.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricJudging:
        return cls(MetricState.from_dict(data["state"]), BinMaker.from_dict(data["bins"]))


@dataclass
class RolloutJudging:
    step: int = -1  # the step the states bake for (a new step bakes afresh; the e-process carries on)
    metrics: dict[str, MetricJudging] = field(default_factory=dict)
    watch: dict[str, MetricJudging] = field(default_factory=dict)  # after promotion, roles reversed
    detectors: dict[str, ChangeDetector] = field(default_factory=dict)
    last: dict[str, Judgement] = field(default_factory=dict)  # each step metric's latest answer
    last_watch: dict[str, Judgement] = field(default_factory=dict)  # the watch's, per metric
    last_mirror: Judgement | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "watch": {k: v.to_dict() for k, v in self.watch.items()},
            "detectors": {k: v.to_dict() for k, v in self.detectors.items()},
            "last": {
                k: {"verdict": j.verdict.value, "reason": j.reason, "evidence": j.evidence}
                for k, j in self.last.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutJudging:
        if data.get("version") != STATE_VERSION:
            return cls()  # an unknown form: start afresh (delays a verdict, never makes one wrongly)
        return cls(
            step=int(data.get("step", -1)),
            metrics={k: MetricJudging.from_dict(v) for k, v in data.get("metrics", {}).items()},
            watch={k: MetricJudging.from_dict(v) for k, v in data.get("watch", {}).items()},
            detectors={k: ChangeDetector.from_dict(v) for k, v in data.get("detectors", {}).items()},
            last={k: _judgement(v) for k, v in data.get("last", {}).items()},
            last_watch={k: _judgement(v) for k, v in data.get("last_watch", {}).items()},
            last_mirror=_judgement(data["last_mirror"]) if data.get("last_mirror") else None,
        )

    def enter_step(self, step: int) -> None:
        if step != self.step:
            self.step = step
            for m in self.metrics.values():
                m.state.new_step()


def _judgement_dict(j: Judgement) -> dict[str, Any]:
    return {"verdict": j.verdict.value, "reason": j.reason, "evidence": j.evidence}


def _judgement(v: dict[str, Any]) -> Judgement:
    return Judgement(Verdict(v["verdict"]), str(v["reason"]), dict(v.get("evidence", {})))


def step_config(spec: RolloutSpec, step: int, metric: Metric) -> JudgeConfig:
    s = spec.steps[min(step, len(spec.steps) - 1)]
    return JudgeConfig(
        alpha=metric.alpha,
        min_regression=metric.min_regression,
        objective=metric.objective,
        rate_floor=metric.rate_floor,
        tolerance=metric.tolerance,
        min_bake_requests=s.min_requests,
        min_bake_seconds=s.min_seconds,
        last_step=step >= len(spec.steps) - 1,
    )


def judge_step(
    judging: RolloutJudging, spec: RolloutSpec, step: int, metric: Metric, reading: TrackCounts, now: float
) -> Judgement:
    judging.enter_step(step)
    m = judging.metrics.setdefault(metric.name, MetricJudging())
    b = m.bins.next_bin(reading, now)
    config = step_config(spec, step, metric)
    m.state.add(config, b.canary.events, b.canary.bad, b.stable.events, b.stable.bad, b.seconds)
    d = judge(m.state, config)
    j = judging.last[metric.name] = Judgement(Verdict(d.verdict), d.reason, d.evidence)
    return j


def judge_mirror(judging: RolloutJudging, spec: RolloutSpec, reading: TrackCounts, now: float) -> Judgement:
    """Any difference beyond ``max_different_share`` fails; enough compared answers and time pass."""
    mirror = spec.mirror
    assert mirror is not None  # only a spec with a mirror phase gets here
    m = judging.metrics.setdefault("mirror", MetricJudging())
    b = m.bins.next_bin(reading, now)
    config = JudgeConfig(min_bake_requests=mirror.min_compared, min_bake_seconds=mirror.min_seconds)
    m.state.add(config, b.canary.events, b.canary.bad, 0, 0, b.seconds)
    n, bad = m.state.canary_n, m.state.canary_bad
    evidence = {
        "compared": n,
        "different": bad,
        "max_different_share": mirror.max_different_share,
        "seconds": m.state.step_seconds,
    }
    if bad > mirror.max_different_share * n:
        j = Judgement(Verdict.FAIL, f"{bad} of {n} mirrored answers differ", evidence)
    elif n >= mirror.min_compared and m.state.step_seconds >= mirror.min_seconds:
        j = Judgement(Verdict.PASS, f"{n} mirrored answers compared, {bad} differ", evidence)
    else:
        j = Judgement(Verdict.CONTINUE, f"{n} of {mirror.min_compared} answers compared", evidence)
    judging.last_mirror = j
    return j


def judge_watch(
    judging: RolloutJudging, spec: RolloutSpec, metric: Metric, reading: TrackCounts, now: float
) -> Judgement:
    """After promotion: ``reading`` is as the router counts it, the old release on the canary track
    (its holdback) and the promoted one on stable.  The judge compares them with the roles reversed
    (promoted = "canary"), and a change detector follows the promoted release's bad rate against
    the rate stable had before promotion.  Only a failure acts; a pass means nothing here."""
    w = judging.watch.setdefault(metric.name, MetricJudging())
    b = w.bins.next_bin(reading, now)
    promoted, old = b.stable, b.canary
    config = step_config(spec, len(spec.steps) - 1, metric)
    w.state.add(config, promoted.events, promoted.bad, old.events, old.bad, b.seconds)
    d = judge(w.state, config)
    detector = judging.detectors.get(metric.name)
    if detector is None:
        detector = judging.detectors[metric.name] = ChangeDetector(_reference_rate(judging, metric))
    detector.update(promoted.events, promoted.bad)
    evidence = {
        "reversed": d.evidence,
        "change_detector": {
            "reference_rate": detector.reference_rate,
            "requests": detector.requests,
            "bad": detector.bad,
            "log_statistic": detector.log_statistic if math.isfinite(detector.log_statistic) else None,
            "log_threshold": math.log(detector.threshold),
        },
    }
    if d.verdict == Verdict.FAIL:
        j = Judgement(
            Verdict.FAIL, f"{metric.name}: promoted release worse than the held-back old one: {d.reason}", evidence
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
    judging.last[metric.name] = j
    return j


def _reference_rate(judging: RolloutJudging, metric: Metric) -> float:
    """Stable's bad rate during the rollout, floored at the metric's rate floor."""
    m = judging.metrics.get(metric.name)
    rate = m.state.stable_bad / m.state.stable_n if m and m.state.stable_n else 0.0
    return min(max(rate, metric.rate_floor), DETECTOR_MAX_REFERENCE)
