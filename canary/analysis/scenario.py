"""Simulated traffic for comparing rollback policies: scenarios and their per-second counts.

A scenario (usually a YAML file, see ``benchmarks/scenarios/``) describes the traffic: total rate,
the canary's share (constant or steps), the bad-event rates of both tracks, when the canary's
fault begins, and bursts where a shared dependency fails both tracks together.  ``traffic`` draws
per-second counts for many runs at once (Poisson arrivals, binomial split and failures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


class ScenarioError(ValueError):
    """A scenario field that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Burst:
    start: float
    duration: float
    error_rate: float


@dataclass(frozen=True)
class Scenario:
    name: str
    duration: int
    rate: float
    canary_share: tuple[tuple[float, float], ...]  # (from second, share) steps
    baseline_error_rate: float
    canary_error_rate: float
    onset: float = 0.0
    bursts: tuple[Burst, ...] = ()
    runs: int = 400
    seed: int = 1
    objective: float | None = None

    @property
    def healthy(self) -> bool:
        """The canary is no worse than stable: any rollback is a false one."""
        return self.canary_error_rate <= self.baseline_error_rate

    def share_at(self, seconds: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        share = np.zeros_like(seconds)
        for start, value in self.canary_share:
            share = np.where(seconds >= start, value, share)
        return share

    @classmethod
    def from_dict(cls, data: Any) -> Scenario:
        if not isinstance(data, dict):
            raise ScenarioError("a scenario is a mapping of fields (name, duration, rate, ...)")
        known = {
            "name",
            "duration",
            "rate",
            "canary_share",
            "baseline_error_rate",
            "canary_error_rate",
            "onset",
            "bursts",
            "runs",
            "seed",
            "objective",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ScenarioError(f"{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
        duration = int(_number(data, "duration", 1, 7 * 86400))
        share_raw = data.get("canary_share", 0.05)
        if isinstance(share_raw, list):
            steps = []
            for i, step in enumerate(share_raw):
                if not (isinstance(step, list | tuple) and len(step) == 2):
                    raise ScenarioError(f"canary_share[{i}]: must be [second, share]")
                steps.append(
                    (
                        _check(f"canary_share[{i}][0]", step[0], 0, duration),
                        _check(f"canary_share[{i}][1]", step[1], 0, 1),
                    )
                )
            share = tuple(sorted(steps))
        else:
            share = ((0.0, _check("canary_share", share_raw, 0, 1)),)
        bursts = []
        for i, b in enumerate(data.get("bursts") or []):
            if not isinstance(b, dict):
                raise ScenarioError(f"bursts[{i}]: must be a mapping with start, duration, error_rate")
            bursts.append(
                Burst(
                    _number(b, "start", 0, duration, f"bursts[{i}]."),
                    _number(b, "duration", 0, duration, f"bursts[{i}]."),
                    _number(b, "error_rate", 0, 1, f"bursts[{i}]."),
                )
            )
        objective = data.get("objective")
        return cls(
            name=str(data.get("name", "scenario")),
            duration=duration,
            rate=_number(data, "rate", 0.001, 1e6),
            canary_share=share,
            baseline_error_rate=_number(data, "baseline_error_rate", 0, 1),
            canary_error_rate=_number(data, "canary_error_rate", 0, 1),
            onset=_number(data, "onset", 0, duration, default=0.0),
            bursts=tuple(bursts),
            runs=int(_number(data, "runs", 1, 1_000_000, default=400)),
            seed=int(_number(data, "seed", 0, 2**32 - 1, default=1)),
            objective=None if objective is None else _check("objective", objective, 0, 1),
        )


def _check(field: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{field}: must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{field}: must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def _number(
    data: dict[str, Any], key: str, lo: float, hi: float, prefix: str = "", default: float | None = None
) -> float:
    if key not in data:
        if default is None:
            raise ScenarioError(f"{prefix}{key}: required")
        return default
    return _check(prefix + key, data[key], lo, hi)


@dataclass
class Traffic:
    """Per-second counts, shape (runs, seconds)."""

    canary_n: IntArray
    canary_bad: IntArray
    stable_n: IntArray
    stable_bad: IntArray


def traffic(scenario: Scenario, runs: int, rng: np.random.Generator) -> Traffic:
    t = np.arange(scenario.duration, dtype=np.float64)
    share = scenario.share_at(t)
    total = rng.poisson(scenario.rate, size=(runs, scenario.duration))
    canary_n = rng.binomial(total, share)
    stable_n = total - canary_n
    base = np.full_like(t, scenario.baseline_error_rate)
    canary_rate = np.where(t >= scenario.onset, scenario.canary_error_rate, scenario.baseline_error_rate)
    for b in scenario.bursts:
        during = (t >= b.start) & (t < b.start + b.duration)
        base = np.where(during, 1 - (1 - base) * (1 - b.error_rate), base)
        canary_rate = np.where(during, 1 - (1 - canary_rate) * (1 - b.error_rate), canary_rate)
    return Traffic(
        canary_n=canary_n,
        canary_bad=rng.binomial(canary_n, canary_rate),
        stable_n=stable_n,
        stable_bad=rng.binomial(stable_n, base),
    )
