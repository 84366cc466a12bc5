"""What the judge needs to know of a rollout spec, as typed, validated data (no I/O).

The controller parses rollout YAML itself (``canary/controller/spec.py``); the judge and the
simulator read the same ``spec:`` mapping here, only the fields that decide a verdict: the
steps' weights and bake rules, the metrics' rules, the rollout's alpha, ``on_inconclusive``,
whether routing is sticky (and how long a sticky rollout may wait in pending for its bucket groups'
history), and the mirror's rules.  Errors name the field.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

BUCKETS = 10_000  # as canary/router/split.py: the sticky hash space
MAX_HISTORY_SECONDS = 3600  # sticky.history_seconds: an hour of pending at most


class SpecError(ValueError):
    """A spec field the judge cannot use; the message names the field."""


class OnInconclusive(enum.Enum):
    PAUSE = "pause"
    ROLLBACK = "rollback"
    PROMOTE = "promote"


@dataclass(frozen=True)
class MetricRule:
    name: str
    kind: str = "errors"
    min_regression: float = 2.0
    rate_floor: float = 1e-4
    tolerance: float = 0.0
    objective: float | None = None
    threshold_ms: float | None = None  # latency: the bad-event threshold (a histogram boundary)


@dataclass(frozen=True)
class StepRule:
    weight: float  # percent of traffic (or of the sticky hash space) on the canary
    min_requests: int = 100
    min_seconds: float = 30.0
    max_seconds: float = 900.0


@dataclass(frozen=True)
class MirrorRule:
    min_compared: int = 100
    min_seconds: float = 30.0
    max_seconds: float = 600.0
    max_different_share: float = 0.0
    # the router asks a baseline (stable asked twice): judged against its noise only, never the objective
    baseline: bool = False


@dataclass(frozen=True)
class JudgeSpec:
    metrics: tuple[MetricRule, ...]
    steps: tuple[StepRule, ...]
    alpha: float = 0.01
    pass_alpha: float = 0.05  # a worse-by-min_regression canary is promoted at most this often
    on_inconclusive: OnInconclusive = OnInconclusive.PAUSE
    sticky: bool = False
    mirror: MirrorRule | None = None
    # sticky: at most this long in pending (the canary ready, taking no traffic) for the first
    # bucket group's history on stable; 0: the first step as soon as the canary is ready
    history_seconds: float = 0.0

    @property
    def bucket_boundaries(self) -> tuple[int, ...]:
        """Sticky bucket groups: group g holds buckets [b[g-1], b[g]) (b[-1] = 0, the last ends at 10,000).

        Group g (g < number of steps) joins the canary at step g; the last group never does and is
        the reference every canary group is compared with.
        """
        return tuple(round(s.weight / 100 * BUCKETS) for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["on_inconclusive"] = self.on_inconclusive.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgeSpec:
        return cls(
            metrics=tuple(MetricRule(**m) for m in data["metrics"]),
            steps=tuple(StepRule(**s) for s in data["steps"]),
            alpha=float(data["alpha"]),
            pass_alpha=float(data["pass_alpha"]),
            on_inconclusive=OnInconclusive(data["on_inconclusive"]),
            sticky=bool(data["sticky"]),
            mirror=None if data.get("mirror") is None else MirrorRule(**data["mirror"]),
            history_seconds=float(data.get("history_seconds", 0.0)),  # stored before it existed: 0
        )

    @classmethod
    def from_mapping(cls, spec: Any) -> JudgeSpec:
        """The ``spec:`` mapping of a rollout (or a whole manifest with ``spec:``)."""
        if isinstance(spec, dict) and isinstance(spec.get("spec"), dict):
            spec = spec["spec"]
        if not isinstance(spec, dict):
            raise SpecError("spec: must be a mapping")
        steps_raw = spec.get("steps")
        if not isinstance(steps_raw, list) or not steps_raw:
            raise SpecError("spec.steps: a non-empty list of steps is required")
        steps = []
        for i, s in enumerate(steps_raw):
            where = f"spec.steps[{i}]"
            if not isinstance(s, dict):
                raise SpecError(f"{where}: must be a mapping")
            steps.append(
                StepRule(
                    weight=_num(s, "weight", where, 0, 100),
                    min_requests=int(_num(s, "min_requests", where, 0, 1e12, 100)),
                    min_seconds=_num(s, "min_seconds", where, 0, 1e7, 30.0),
                    max_seconds=_num(s, "max_seconds", where, 0, 1e7, 900.0),
                )
            )
        weights = [s.weight for s in steps]
        if weights != sorted(weights) or len(set(weights)) != len(weights) or weights[-1] >= 100:
            raise SpecError("spec.steps: weights must rise step by step and stay below 100")
        metrics_raw = spec.get("metrics") or [{"name": "errors", "kind": "errors"}]
        if not isinstance(metrics_raw, list):
            raise SpecError("spec.metrics: must be a list")
        metrics, alphas = [], []
        for i, m in enumerate(metrics_raw):
            where = f"spec.metrics[{i}]"
            if not isinstance(m, dict) or not isinstance(m.get("name"), str):
                raise SpecError(f"{where}: must be a mapping with a name")
            if "alpha" in m:
                alphas.append(_num(m, "alpha", where, 1e-9, 0.5))
            objective = m.get("objective")
            threshold = m.get("threshold_ms")
            metrics.append(
                MetricRule(
                    name=m["name"],
                    kind=str(m.get("kind", "errors")),
                    min_regression=_num(m, "min_regression", where, 1.0001, 1e6, 2.0),
                    rate_floor=_num(m, "rate_floor", where, 1e-9, 1, 1e-4),
                    tolerance=_num(m, "tolerance", where, 0, 0.999, 0.0),
                    objective=None if objective is None else _num(m, "objective", where, 1e-9, 0.999),
                    threshold_ms=None if threshold is None else _num(m, "threshold_ms", where, 0, 1e9),
                )
            )
        alpha = _num(spec, "alpha", "spec", 1e-9, 0.5, min(alphas) if alphas else 0.01)
        raw_on = spec.get("on_inconclusive", "pause")
        try:
            on_inconclusive = OnInconclusive(raw_on)
        except ValueError:
            raise SpecError(f"spec.on_inconclusive: must be pause, rollback or promote, got {raw_on!r}") from None
        mirror = None
        m = spec.get("mirror")
        if m is not None:
            if not isinstance(m, dict):
                raise SpecError("spec.mirror: must be a mapping")
            mirror = MirrorRule(
                min_compared=int(_num(m, "min_compared", "spec.mirror", 0, 1e9, 100)),
                min_seconds=_num(m, "min_seconds", "spec.mirror", 0, 1e7, 30.0),
                max_seconds=_num(m, "max_seconds", "spec.mirror", 0, 1e7, 600.0),
                max_different_share=_num(m, "max_different_share", "spec.mirror", 0, 1, 0.0),
                baseline=_baseline(m),
            )
        sticky = spec.get("sticky")
        if sticky == "none":  # as in a rollout spec: per request
            sticky = None
        if sticky is not None and not isinstance(sticky, dict):
            raise SpecError("spec.sticky: must be none or a mapping such as {header: X-Account-Id}")
        history = _num(sticky or {}, "history_seconds", "spec.sticky", 0, MAX_HISTORY_SECONDS, 0.0)
        return cls(
            metrics=tuple(metrics),
            steps=tuple(steps),
            alpha=alpha,
            on_inconclusive=on_inconclusive,
            sticky=bool(sticky),
            mirror=mirror,
            history_seconds=history,
        )


def _baseline(mirror: dict[str, Any]) -> bool:
    raw = mirror.get("baseline", "none")
    if raw not in ("none", "stable"):
        raise SpecError(f"spec.mirror.baseline: must be none or stable, got {raw!r}")
    return bool(raw == "stable")


def _num(data: dict[str, Any], key: str, where: str, lo: float, hi: float, default: float | None = None) -> float:
    if key not in data:
        if default is None:
            raise SpecError(f"{where}.{key}: required")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{where}.{key}: must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise SpecError(f"{where}.{key}: must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)
