"""Anytime-valid sequential tests on event counts: the statistics behind the judge.

Input, per time bin: requests and bad events per track, ``n_c, x_c`` for the canary and ``n_s,
x_s`` for stable.  "Bad" is whatever the metric counts (5xx, slow, lost, different).

Regression test ("is the canary worse than stable?")
----------------------------------------------------
Condition on what a bin cannot tell us about the canary: its request counts and the total number
of bad events ``k = x_c + x_s``.  If the canary is no worse (equal bad rate ``p``), each of the
``n_c + n_s`` requests is equally likely to be among the ``k`` bad ones, so ``x_c`` follows the
hypergeometric law with ``k`` draws from ``n_c`` canary requests out of ``n_c + n_s``.  For rare
events this is Binomial(k, pi) with ``pi = n_c / (n_c + n_s)``, the canary's share of traffic *in
that bin*, and it stays so however the split changes from bin to bin and whatever the base rate
does (a shared dependency failing raises ``k`` for both tracks, not the canary's share of it).

If instead the canary's rate is ``r`` times stable's, a bad event falls on the canary with
probability ``theta_r = r*pi / (r*pi + 1 - pi)``.  The likelihood ratio of a bin simplifies to

    LR_r = (theta_r/pi)^x_c * ((1-theta_r)/(1-pi))^x_s = r^x_c / (1 + (r-1)*pi)^k

Under "canary no worse", E[LR_r] <= 1: with equal rates and Binomial(k, pi) it is exactly 1; the
hypergeometric law is more concentrated than the binomial (Hoeffding 1963), and LR_r is convex in
``x_c``, so its mean is no larger; a canary *better* than stable makes ``x_c`` smaller, and LR_r
grows with ``x_c`` for r > 1.  The product over bins is therefore a nonnegative supermartingale
with initial value 1, and so is any fixed-weight average over ``r`` (we use equal weights over a
grid from 1.5x to 1000x, which adapts to the regression's unknown size: Lindon and Malek,
"Anytime-valid inference for multinomial count data", NeurIPS 2022).  Ville's inequality then
bounds the chance that the mixture *ever* reaches ``1/alpha`` by ``alpha``: however often the
controller looks, whatever the traffic schedule.  Bins with no traffic or no bad events have
LR = 1 and change nothing.

Objective test ("does the canary alone miss its objective?")
------------------------------------------------------------
For the case where stable is broken too, the canary's bad rate is tested against an objective
``p0`` (99.9% success -> p0 = 0.001): per bin, ``LR_r = (r*p0/p0)^x_c * ((1-r*p0)/(1-p0))^(n_c-x_c)``
with ``r*p0`` capped below 1; under ``p <= p0`` the mixture is again a test supermartingale.

Everything is computed in logs and vectorised: the same functions serve the live judge (one bin
at a time) and the simulator (thousands of runs at once).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_RATIOS = (1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)
Array = npt.NDArray[np.float64]


def regression_log_lr(
    canary_n: Any, canary_bad: Any, stable_n: Any, stable_bad: Any, ratios: Any = DEFAULT_RATIOS
) -> Array:
    """log LR_r per bin and ratio: shape ``bins.shape + (len(ratios),)``.  Empty bins give 0."""
    cn = np.asarray(canary_n, dtype=np.float64)[..., None]
    sn = np.asarray(stable_n, dtype=np.float64)[..., None]
    xc = np.asarray(canary_bad, dtype=np.float64)[..., None]
    k = xc + np.asarray(stable_bad, dtype=np.float64)[..., None]
    r = np.asarray(ratios, dtype=np.float64)
    total = cn + sn
    with np.errstate(divide="ignore", invalid="ignore"):
        pi = np.where(total > 0, cn / np.where(total > 0, total, 1.0), 0.0)
    usable = (cn > 0) & (sn > 0)
    out: Array = np.where(usable, xc * np.log(r) - k * np.log1p((r - 1.0) * pi), 0.0)
    return out


def objective_log_lr(canary_n: Any, canary_bad: Any, p0: float, ratios: Any = DEFAULT_RATIOS) -> Array:
    """log LR per bin of "canary bad rate is r*p0" against "it is p0"."""
    n = np.asarray(canary_n, dtype=np.float64)[..., None]
    x = np.asarray(canary_bad, dtype=np.float64)[..., None]
    p1 = np.minimum(np.asarray(ratios, dtype=np.float64) * p0, 0.999)
    out: Array = x * np.log(p1 / p0) + (n - x) * (np.log1p(-p1) - np.log1p(-p0))
    return out


def mixture_log_e(cumulative_log_lr: Array) -> Array:
    """log of the equal-weight mixture over the last axis (the ratios)."""
    m = cumulative_log_lr.shape[-1]
    out: Array = np.logaddexp.reduce(cumulative_log_lr, axis=-1) - np.log(m)
    return out
