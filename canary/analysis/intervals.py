"""Confidence intervals a release engineer can read next to a verdict.

The ratio of bad rates (canary / stable) comes from the share of bad events that fell on the
canary: with ``theta`` that share and ``pi`` the canary's share of requests,
``ratio = theta*(1-pi) / (pi*(1-theta))``.  The interval for ``theta`` is Wilson's score interval;
it is a fixed-sample interval shown for reading, not the basis of any decision (the decisions use
the anytime-valid tests of ``canary.analysis.sequential``).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(successes: float, trials: float, z: float = Z95) -> tuple[float, float]:
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_ratio_interval(
    canary_n: float, canary_bad: float, stable_n: float, stable_bad: float
) -> tuple[float, float, float] | None:
    """(estimate, low, high) of canary rate / stable rate; None without requests on both tracks.

    ``math.inf`` stands for "unbounded" (no stable bad events).
    """
    if canary_n <= 0 or stable_n <= 0:
        return None
    k = canary_bad + stable_bad
    if k == 0:
        return None
    pi = canary_n / (canary_n + stable_n)

    def to_ratio(theta: float) -> float:
        if theta >= 1.0:
            return math.inf
        return theta * (1 - pi) / (pi * (1 - theta))

    lo, hi = wilson(canary_bad, k)
    return to_ratio(canary_bad / k), to_ratio(lo), to_ratio(hi)


def upper_bound(successes: float, trials: float) -> float:
    return wilson(successes, trials)[1]
