"""The judge: per metric, counts per track in, ``continue`` / ``pass`` / ``fail`` out, with evidence.

A :class:`MetricState` accumulates bins (it is plain data, so the controller can persist it after
every bin and resume after a crash); :func:`judge` reads it:

- **fail** when the regression test's e-value reaches ``1/alpha`` (canary worse than stable), or the
  objective test's does while stable meets the objective (canary alone misses it), and the canary
  has at least ``min_canary_bad`` bad events out of ``min_canary_requests`` requests;
- **pass**, for a step before the last, when it has baked (requests and seconds) and the data hold
  no evidence against the canary (the regression e-value is at most 1), or the canary's bad rate is
  within the spec's ``tolerance`` of stable's: the next step raises the exposure, and the
  regression test keeps watching it with the evidence gathered so far;
- **pass**, for the last step (after which the comparison ends), when it has baked and a regression
  of ``min_regression`` is ruled out: the reversed likelihood ratio at that size (a test supermartingale for "canary at
  least that much worse") reaches ``1/PASS_ALPHA``, or once a regression of that size over
  ``max(stable's rate, rate_floor)`` would have been caught in expectation while the e-value
  against the canary is at most 1 (with few or no bad events there is too little to test a ratio
  on, and one stray stable error must not make a healthy canary wait for a sample it cannot get),
  or the canary's bad rate is within ``tolerance`` of stable's (a 99.7% upper bound of it is at
  most stable's rate plus the tolerance).  A tolerance is for metrics where a stray bad event is
  noise (a slow request on a busy host); with none (the default, and always for lost data) any
  evidence against the canary holds it, until it fails or the step times out;
- **continue** otherwise, with the reason in words.  No data is ``continue``, never ``fail``.

When an objective is set, alpha is split evenly between the regression and the objective tests.
If both tracks miss the objective (a shared dependency, or stable broken too) the verdict is
``continue`` and passing is blocked: rolling back would not help, and promoting would be wrong.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canary.analysis.intervals import rate_ratio_interval, wilson
from canary.analysis.sequential import (
    DEFAULT_RATIOS,
    mixture_log_e,
    objective_log_lr,
    regression_exposure,
    regression_log_lr,
)

CONTINUE, PASS, FAIL = "continue", "pass", "fail"
NO_EVIDENCE = 1e-9  # a log e-value at most this is "no evidence against the canary" (float rounding)
# the canary's bad rate is "within tolerance" when this bound of it is: a 99.7% Wilson bound, wider
# than 95% because it is looked at on every bin (a pass rule, not a test with an error guarantee)
TOLERANCE_Z = 3.0
PASS_ALPHA = 0.05  # a step passes when a regression of min_regression is ruled out at this level


@dataclass(frozen=True)
class JudgeConfig:
    alpha: float = 0.01
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    min_canary_bad: int = 3
    min_canary_requests: int = 20
    objective: float | None = None  # the canary's own maximum bad rate (0.001 for 99.9% success)
    min_regression: float = 2.0  # the smallest regression the spec cares about (pass rule)
    min_bake_requests: int = 100
    min_bake_seconds: float = 30.0
    rate_floor: float = 1e-4  # assumed stable bad rate when stable has had none (pass rule)
    last_step: bool = True  # only the last step needs the regression ruled out to pass
    # an excess of bad rate over stable's the spec does not care about (a stray slow request on a
    # busy host); 0 for anything that loses data: then any evidence against the canary holds it
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be between 0 and 1")
        if not self.ratios or min(self.ratios) <= 1:
            raise ValueError("ratios must all be above 1")
        if self.objective is not None and not 0 < self.objective < 1:
            raise ValueError("objective must be a bad-event rate between 0 and 1")
        if self.min_regression <= 1:
            raise ValueError("min_regression must be above 1")
        if not 0 <= self.tolerance < 1:
            raise ValueError("tolerance must be a bad-rate excess between 0 and 1")

    @property
    def regression_alpha(self) -> float:
        return self.alpha / 2 if self.objective is not None else self.alpha


@dataclass
class MetricState:
    """Everything the judge needs about one metric of one step, as plain numbers."""

    bins: int = 0
    seconds: float = 0.0
    canary_n: int = 0
    canary_bad: int = 0
    stable_n: int = 0
    stable_bad: int = 0
    regression: list[float] = field(default_factory=list)  # cumulative log LR per ratio
    exposure: list[float] = field(default_factory=list)  # for the pass rule
    objective: list[float] = field(default_factory=list)  # canary vs objective
    stable_objective: list[float] = field(default_factory=list)
    # log evidence that the canary is NOT min_regression times worse (reverse test, for passing)
    no_regression: float = 0.0
    # the current step's bake: a new step bakes afresh while the evidence above carries on
    step_seconds: float = 0.0
    step_canary_n: int = 0

    def new_step(self) -> None:
        self.step_seconds = 0.0
        self.step_canary_n = 0

    def add(
        self, config: JudgeConfig, canary_n: int, canary_bad: int, stable_n: int, stable_bad: int, seconds: float
    ) -> None:
        if min(canary_n, canary_bad, stable_n, stable_bad) < 0 or canary_bad > canary_n or stable_bad > stable_n:
            raise ValueError("counts must be non-negative and bad events at most the requests")
        m = len(config.ratios)
        self.regression = _add(
            self.regression, regression_log_lr(canary_n, canary_bad, stable_n, stable_bad, config.ratios), m
        )
        self.no_regression -= float(
            regression_log_lr(canary_n, canary_bad, stable_n, stable_bad, (config.min_regression,)).sum()
        )
        self.exposure = _add(
            self.exposure, regression_exposure(canary_n, stable_n, config.min_regression, config.ratios), m
        )
        if config.objective is not None:
            self.objective = _add(
                self.objective, objective_log_lr(canary_n, canary_bad, config.objective, config.ratios), m
            )
            self.stable_objective = _add(
                self.stable_objective, objective_log_lr(stable_n, stable_bad, config.objective, config.ratios), m
            )
        self.bins += 1
        self.seconds += seconds
        self.step_seconds += seconds
        self.step_canary_n += canary_n
        self.canary_n += canary_n
        self.canary_bad += canary_bad
        self.stable_n += stable_n
        self.stable_bad += stable_bad

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricState:
        return cls(**data)


def _add(total: list[float], increment: Any, m: int) -> list[float]:
    base = np.asarray(total if total else [0.0] * m, dtype=np.float64)
    return [float(v) for v in base + np.asarray(increment, dtype=np.float64).reshape(m)]


@dataclass(frozen=True)
class Decision:
    verdict: str
    reason: str
    evidence: dict[str, Any]


def judge(state: MetricState, config: JudgeConfig) -> Decision:
    evidence = _evidence(state, config)
    if state.canary_n == 0:
        return Decision(CONTINUE, "no data yet: the canary has served no requests in this step", evidence)
    if state.stable_n == 0:
        return Decision(CONTINUE, "no data yet: stable has served no requests to compare with", evidence)
    guards = state.canary_bad >= config.min_canary_bad and state.canary_n >= config.min_canary_requests
    reg = evidence["regression"]
    if reg["log_e"] >= reg["log_threshold"]:
        if guards:
            return Decision(FAIL, "canary is worse than stable: " + _counts_words(evidence), evidence)
        return Decision(
            CONTINUE,
            f"strong evidence against the canary, waiting for {config.min_canary_bad} bad "
            f"events and {config.min_canary_requests} requests before failing",
            evidence,
        )
    blocked = ""
    obj = evidence.get("objective")
    if obj and obj["log_e"] >= obj["log_threshold"]:
        if obj["stable_misses"]:
            blocked = (
                f"both tracks miss the objective ({_pct(config.objective or 0)} bad at most): a shared "
                "failure or stable broken too; not rolling back, not passing"
            )
        elif guards:
            return Decision(
                FAIL,
                f"canary misses its objective of at most {_pct(config.objective or 0)} bad while "
                "stable meets it: " + _counts_words(evidence),
                evidence,
            )
    if blocked:
        return Decision(CONTINUE, blocked, evidence)
    waiting = []
    if state.step_seconds < config.min_bake_seconds:
        waiting.append(f"baking {state.step_seconds:.0f} of {config.min_bake_seconds:.0f} s")
    if state.step_canary_n < config.min_bake_requests:
        waiting.append(f"{state.step_canary_n} of {config.min_bake_requests} canary requests in this step")
    power, clear, reg = evidence["power"], evidence["no_regression"], evidence["regression"]
    if not config.last_step:
        if reg["log_e"] > NO_EVIDENCE and not evidence["within_tolerance"]:
            waiting.append(f"some evidence against the canary (e-value {_num(reg['e_value'])}): baking on")
        if waiting:
            return Decision(CONTINUE, "; ".join(waiting), evidence)
        return Decision(PASS, f"baked with {_against(reg)} against the canary: " + _counts_words(evidence), evidence)
    ruled_out = clear["log_e"] >= clear["log_threshold"]
    nothing_bad = state.canary_bad + state.stable_bad == 0
    if not ruled_out and not (
        power["fraction"] >= 1.0 and (reg["log_e"] <= NO_EVIDENCE or evidence["within_tolerance"])
    ):
        if nothing_bad:
            waiting.append(
                f"no bad events yet; a {config.min_regression:g}x regression would so far be caught with "
                f"{power['fraction']:.0%} of the evidence needed"
            )
        else:
            waiting.append(
                f"a {config.min_regression:g}x regression is not yet ruled out "
                f"(evidence {_num(clear['e_value'])} of {clear['threshold']:g} needed)"
            )
    if waiting:
        return Decision(CONTINUE, "; ".join(waiting), evidence)
    return Decision(PASS, f"no regression of {config.min_regression:g}x or more: " + _counts_words(evidence), evidence)


def _against(reg: dict[str, Any]) -> str:
    if reg["log_e"] <= NO_EVIDENCE:
        return "no evidence"
    return f"evidence within tolerance (e-value {_num(reg['e_value'])})"


def _evidence(state: MetricState, config: JudgeConfig) -> dict[str, Any]:
    m = len(config.ratios)
    reg_log_e = float(mixture_log_e(np.asarray(state.regression or [0.0] * m)))
    stable_rate = state.stable_bad / state.stable_n if state.stable_n else 0.0
    assumed = max(stable_rate, config.rate_floor)
    exposure = np.asarray(state.exposure or [0.0] * m)
    expected = float(np.max(assumed * exposure) - math.log(m))
    needed = math.log(1 / config.regression_alpha)
    interval = rate_ratio_interval(state.canary_n, state.canary_bad, state.stable_n, state.stable_bad)
    evidence: dict[str, Any] = {
        "counts": {
            "canary": {
                "requests": state.canary_n,
                "bad": state.canary_bad,
                "rate": _rate(state.canary_bad, state.canary_n),
            },
            "stable": {"requests": state.stable_n, "bad": state.stable_bad, "rate": stable_rate},
        },
        "bins": state.bins,
        "seconds": state.seconds,
        "regression": {
            "statistic": "e-value of 'canary no worse than stable' (mixture likelihood ratio)",
            "log_e": reg_log_e,
            "e_value": _safe_exp(reg_log_e),
            "log_threshold": needed,
            "threshold": 1 / config.regression_alpha,
            "alpha": config.regression_alpha,
        },
        "ratio": None if interval is None else {"estimate": interval[0], "low95": interval[1], "high95": interval[2]},
        "no_regression": {
            "statistic": f"e-value of 'canary at least {config.min_regression:g}x worse' (reversed likelihood ratio)",
            "log_e": state.no_regression,
            "e_value": _safe_exp(state.no_regression),
            "log_threshold": math.log(1 / PASS_ALPHA),
            "threshold": 1 / PASS_ALPHA,
        },
        "power": {
            "min_regression": config.min_regression,
            "assumed_stable_rate": assumed,
            "expected_log_e": expected,
            "fraction": max(0.0, expected / needed),
        },
        "within_tolerance": False,
    }
    if config.tolerance > 0 and state.canary_n:
        upper = wilson(state.canary_bad, state.canary_n, TOLERANCE_Z)[1]
        evidence["tolerance"] = {"excess": config.tolerance, "canary_rate_upper": upper}
        evidence["within_tolerance"] = upper <= stable_rate + config.tolerance
    if config.objective is not None:
        obj_log_e = float(mixture_log_e(np.asarray(state.objective or [0.0] * m)))
        stable_obj = float(mixture_log_e(np.asarray(state.stable_objective or [0.0] * m)))
        obj_needed = math.log(1 / (config.alpha / 2))
        evidence["objective"] = {
            "max_bad_rate": config.objective,
            "log_e": obj_log_e,
            "e_value": _safe_exp(obj_log_e),
            "log_threshold": obj_needed,
            "threshold": 2 / config.alpha,
            "stable_misses": stable_obj >= obj_needed or stable_rate > config.objective,
        }
    return evidence


def _counts_words(evidence: dict[str, Any]) -> str:
    c, s = evidence["counts"]["canary"], evidence["counts"]["stable"]
    text = (
        f"canary {c['bad']} bad of {c['requests']} ({_pct(c['rate'])}) vs stable {s['bad']} of "
        f"{s['requests']} ({_pct(s['rate'])})"
    )
    ratio = evidence.get("ratio")
    if ratio:
        text += f"; {_x(ratio['estimate'])} as often (95% interval {_x(ratio['low95'])} to {_x(ratio['high95'])})"
    reg = evidence["regression"]
    text += f"; e-value {_num(reg['e_value'])} against 'no worse' (fails at {reg['threshold']:g})"
    return text


def _rate(bad: int, n: int) -> float:
    return bad / n if n else 0.0


def _pct(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def _x(value: float) -> str:
    return "unbounded" if math.isinf(value) else f"{value:.3g}x"


def _num(value: float) -> str:
    return f"{value:.3g}" if value < 1e6 else f"10^{math.log10(value):.1f}"


def _safe_exp(log_value: float) -> float:
    return math.exp(min(log_value, 700.0))
