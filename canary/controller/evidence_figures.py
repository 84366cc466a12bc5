"""The judge's figures read out of a judgement's evidence, whichever judge wrote it.

Sits between the judge's evidence (a JSON-able mapping, the shape ``GET /api/rollouts/{id}`` shows:
``regression.e_value`` / ``counts.canary.bad`` from the per-metric judge, or ``e_value`` /
``canary.bad`` from the rollout judge) and its readers: the dashboard's charts and the one-line
summary of a notification.  A figure the evidence does not carry is None, never a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figures:
    e_value: float | None
    threshold: float | None
    canary_requests: int | None
    canary_bad: int | None
    stable_requests: int | None
    stable_bad: int | None

    def rate(self, track: str) -> float | None:
        n, bad = (
            (self.canary_requests, self.canary_bad) if track == "canary" else (self.stable_requests, self.stable_bad)
        )
        return None if not n or bad is None else bad / n

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "e": self.e_value,
            "threshold": self.threshold,
            "canary_n": self.canary_requests,
            "canary_bad": self.canary_bad,
            "stable_n": self.stable_requests,
            "stable_bad": self.stable_bad,
            "canary_rate": self.rate("canary"),
            "stable_rate": self.rate("stable"),
        }


def figures(evidence: Any) -> Figures | None:
    """None when the evidence has no e-value (the mirror's comparison, a hold)."""
    if not isinstance(evidence, dict):
        return None
    if "reversed" in evidence and isinstance(evidence["reversed"], dict):  # the watch: roles reversed
        evidence = evidence["reversed"]
    e = _number(_get(evidence, "e_value", "regression.e_value"))
    if e is None:
        return None
    return Figures(
        e,
        _number(_get(evidence, "threshold", "regression.threshold")),
        _count(_get(evidence, "canary.requests", "counts.canary.requests")),
        _count(_get(evidence, "canary.bad", "counts.canary.bad")),
        _count(_get(evidence, "stable.requests", "counts.stable.requests")),
        _count(_get(evidence, "stable.bad", "counts.stable.bad")),
    )


def _get(data: dict[str, Any], *paths: str) -> Any:
    for path in paths:
        value: Any = data
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def _number(value: Any) -> float | None:
    if value == "unbounded":  # the API's word for an infinite figure
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
