"""The regression test where customers, not requests, are routed (sticky routing): many runs at once.

Why the request-level test fails here
-------------------------------------
With a sticky key the canary holds a fixed set of customers.  Customers differ (some fail more
often on *both* releases), so the canary's share of bad events under "no worse" is its customers'
share of bad events, not their share of requests; counted per request, identical releases are
rolled back far more often than alpha.

What the router provides (the contract)
---------------------------------------
The spec's step weights cut the salted hash space (``canary/router/split.py:sticky_bucket``, with
the rollout's own salt, so no customer is on every canary) into groups: group ``g`` is the buckets
``[T_{g-1}, T_g)`` with ``T_g`` = step g's weight in buckets (``JudgeSpec.bucket_boundaries``),
and a last *reference* group ``[T_last, 10000)`` that never joins the canary.  Per bin and per
metric the router reports, for every group, the requests and bad events of the customers whose
bucket is in it (whatever track served them) and how many of those the canary served
(:class:`canary.analysis.facade.GroupCounts`).  It counts with the rollout's salt from the moment
the salt is chosen, *before* the canary takes traffic, so the first group has a history on stable.

The test
--------
Per group ``g`` against the reference ``R``, per bin, given the ``k`` bad events of the two,
``x_g ~ Binomial(k, q)`` with ``logit q = eta_g + log(n_g / n_R)``: ``eta_g`` is how much more often
``g``'s customers fail than ``R``'s, the same on both releases (customers' bad rates may differ as
they like, and a shared cause may scale everyone's over time; what is assumed is that a group's
relative rate and traffic mix stay put).  While ``g`` is on the canary, a canary ``r`` times worse
adds ``log r`` to ``eta_g``.  ``eta_g`` is unknown: the e-value is a universal-inference ratio
(Wasserman, Ramdas, Balakrishnan 2020),

    e_g = (mixture over eta and r of the likelihood) / (sup over eta of the null likelihood),

which is at most the ratio against the true ``eta``, a test martingale: Ville bounds the chance
that it ever reaches ``1/alpha`` by ``alpha``.  The log-likelihood is concave in ``eta``; it and
its slope are kept on a grid, and the sup is bounded from above by the tangents between grid
points (an upper bound in the denominator keeps the e-value valid).  Bins in which ``g`` is on
stable teach ``eta_g``; without any, nothing can be said and the e-value stays at most 1.  The
groups' tests share the reference's counts, so the rollout's alpha is split among them
(Bonferroni), not averaged.  The pass test is the same construction with the roles reversed:
"``g`` at least ``min_regression`` worse" as the (composite) null, read on one group fixed in
advance (the widest), as any single group's test is valid alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from canary.analysis.eprocess import array, floats

Array = npt.NDArray[np.float64]
ETA = np.linspace(math.log(1 / 64), math.log(64), 21)  # log relative bad rate of a group
# the numerator's prior over eta: normal with sd 1 (a group's customers usually fail within a
# factor of e of the others'); any fixed prior keeps the guarantee, a closer one costs less evidence
LOG_PRIOR = -0.5 * ETA**2 - np.logaddexp.reduce(-0.5 * ETA**2)
STICKY_RATIOS = (2.0, 5.0, 20.0, 100.0)  # the alternatives: fewer than per request, the grid is 2-d
# Bad events the first group and the reference must have shown on stable, before the canary, for the
# group test to be used: with fewer, eta is all but unknown and the sup over it explains away any
# canary (a canary failing 7 of 29 against stable's 0 of 56 passed a step on a history of one event).
MIN_HISTORY_BAD = 5
MIN_HISTORY_INFO = 2.0


@dataclass
class StickyGroups:
    """Per group (runs, groups, eta[, ratio]) sums of the conditional log-likelihood and its slope."""

    ratios: Array  # column 0 is 1 (null), column 1 min_regression, then the alternatives' grid
    pre_ll: Array  # (runs, G, E): bins with the group on stable
    dur_ll: Array  # (runs, G, E, K): bins with the group on the canary, eta + log r
    pre_d: Array  # (runs, G, E)
    dur_d0: Array  # (runs, G, E): slope at r = 1
    dur_d1: Array  # (runs, G, E): slope at r = min_regression
    canary_bins: Array  # (runs, G): bins the group spent on the canary
    given: Array  # (runs,): bins that came with group counts
    pre_k: Array  # (runs,): bad events of the first group and the reference while it was on stable
    # (runs,): what those bad events tell of the first group's relative rate (sum of k q (1 - q), q its
    # share of the two's requests): about its own bad events when it is small against the reference
    pre_info: Array

    @classmethod
    def new(
        cls, runs: int, groups: int, min_regression: float, ratios: tuple[float, ...] = STICKY_RATIOS
    ) -> StickyGroups:
        grid = np.asarray((1.0, min_regression, *ratios))
        e = len(ETA)
        return cls(
            ratios=grid,
            pre_ll=np.zeros((runs, groups, e)),
            dur_ll=np.zeros((runs, groups, e, len(grid))),
            pre_d=np.zeros((runs, groups, e)),
            dur_d0=np.zeros((runs, groups, e)),
            dur_d1=np.zeros((runs, groups, e)),
            canary_bins=np.zeros((runs, groups)),
            given=np.zeros(runs),
            pre_k=np.zeros(runs),
            pre_info=np.zeros(runs),
        )

    @property
    def seen(self) -> bool:
        """Group counts have been given (else the judge falls back to the request-level test)."""
        return bool(self.given.sum() > 0)

    def informed(self) -> npt.NDArray[np.bool_]:
        """Per run: the first group has a history on stable from before the canary took traffic
        (at least ``MIN_HISTORY_BAD`` bad events of it and the reference, and ``MIN_HISTORY_INFO``
        of information on its own rate: at 5% of the traffic, the reference's events alone say
        little about it, and a broken canary went unseen in 12% of runs after a 30 s history).

        Without one its e-value stays at most 1 whatever the canary does (a broken canary would
        pass unseen), so the judge falls back to a request-level test for that run, one that
        allows the group's customers to differ (``canary.analysis.sticky_fallback``).  The first
        group's history can only come from bins before the first step, so the choice is fixed
        before any canary data: it does not spend the guarantee.
        """
        out: npt.NDArray[np.bool_] = (
            (self.given > 0) & (self.pre_k >= MIN_HISTORY_BAD) & (self.pre_info >= MIN_HISTORY_INFO)
        )
        return out

    @property
    def groups(self) -> int:
        return int(self.pre_ll.shape[1])

    def update(self, n: Array, bad: Array, on_canary: npt.NDArray[np.bool_]) -> None:
        """One bin: ``n``, ``bad`` (runs, G+1) per group with the reference last; ``on_canary`` (runs, G)."""
        g = self.groups
        n_g, x_g = n[:, :g], bad[:, :g]
        n_r, x_r = n[:, g : g + 1], bad[:, g : g + 1]
        k = x_g + x_r
        usable = (n_g > 0) & (n_r > 0) & (k > 0)
        self.given += 1.0
        # only the (run, group) cells with bad events change (most cells, at low rates, have none)
        for on in (False, True):
            rows, cols = np.nonzero(usable & (on_canary == on))
            if not len(rows):
                continue
            self._dirty().update(rows.tolist())
            kk = k[rows, cols][:, None]
            xx = x_g[rows, cols][:, None]
            eta = ETA[None, :] + np.log(n_g[rows, cols] / n_r[rows, 0])[:, None]
            if not on:
                first = cols == 0
                np.add.at(self.pre_k, rows[first], kk[first, 0])
                share = n_g[rows[first], 0] / (n_g[rows[first], 0] + n_r[rows[first], 0])
                np.add.at(self.pre_info, rows[first], kk[first, 0] * share * (1.0 - share))
                ll, d = _loglik(eta, xx, kk)
                self.pre_ll[rows, cols] += ll
                self.pre_d[rows, cols] += d
                continue
            ll_r, d_r = _loglik(eta[..., None] + np.log(self.ratios)[None, None, :], xx[..., None], kk[..., None])
            self.dur_ll[rows, cols] += ll_r
            self.dur_d0[rows, cols] += d_r[..., 0]
            self.dur_d1[rows, cols] += d_r[..., 1]
            self.canary_bins[rows, cols] += 1.0

    def _dirty(self) -> set[int]:
        dirty: set[int] = self.__dict__.setdefault("_dirty_rows", set(range(self.pre_ll.shape[0])))
        return dirty

    def _values(self) -> tuple[Array, Array]:
        """(log_e, log_clear) per (run, group), recomputed only for the runs whose counts changed."""
        cache: dict[str, Array] = self.__dict__.setdefault("_cache", {})
        dirty = self._dirty()
        if "log_e" not in cache:
            shape = self.pre_ll.shape[:2]
            cache["log_e"], cache["log_clear"] = np.zeros(shape), np.zeros(shape)
            dirty.update(range(shape[0]))
        if dirty:
            rows = np.fromiter(sorted(dirty), dtype=np.int64)
            pre, dur = self.pre_ll[rows], self.dur_ll[rows]
            seen = self.canary_bins[rows] > 0
            alts = pre[..., None] + dur[..., 2:] + LOG_PRIOR[None, None, :, None]
            num = np.logaddexp.reduce(alts.reshape(*alts.shape[:2], -1), axis=2) - math.log(alts.shape[3])
            den = _sup_bound(pre + dur[..., 0], self.pre_d[rows] + self.dur_d0[rows])
            cache["log_e"][rows] = np.where(seen, num - den, 0.0)
            null = pre + dur[..., 0] + LOG_PRIOR[None, None, :]
            den1 = _sup_bound(pre + dur[..., 1], self.pre_d[rows] + self.dur_d1[rows])
            cache["log_clear"][rows] = np.where(seen, np.logaddexp.reduce(null, axis=2) - den1, 0.0)
            dirty.clear()
        return cache["log_e"], cache["log_clear"]

    def log_e(self) -> Array:
        """Per group (runs, G): log e-value against "the canary is no worse for its customers"."""
        return self._values()[0].copy()

    def log_clear(self) -> Array:
        """Per group (runs, G): log e-value against "the canary is min_regression or more worse"."""
        return self._values()[1].copy()

    def to_dict(self) -> dict[str, Any]:
        return {k: floats(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StickyGroups:
        runs = len(data["given"])
        return cls(**{k: array(data[k]) if k in data else np.zeros(runs) for k in cls.__dataclass_fields__})


def _loglik(eta: Array, x: Array, k: Array) -> tuple[Array, Array]:
    """Binomial(k, sigmoid(eta)) log-likelihood of x (without the binomial coefficient) and its slope."""
    log_q = -np.logaddexp(0.0, -eta)
    log_1q = -np.logaddexp(0.0, eta)
    q = np.exp(log_q)
    ll: Array = x * log_q + (k - x) * log_1q
    d: Array = x - k * q
    return ll, d


def _sup_bound(f: Array, d: Array) -> Array:
    """An upper bound of sup over eta of a concave function known on the grid by values and slopes.

    Between neighbours the function lies under both tangents, so under their lower envelope;
    beyond the grid's ends, a slope pointing outwards is bounded by 0 (a log-likelihood of
    discrete data is at most 0).
    """
    h = ETA[1] - ETA[0]
    fa, fb, da, db = f[..., :-1], f[..., 1:], d[..., :-1], d[..., 1:]
    lin_a = fa + np.maximum(da, 0.0) * h
    lin_b = fb + np.maximum(-db, 0.0) * h
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = da - db
        x = np.where(denom > 0, (fb - fa - db * h) / np.where(denom > 0, denom, 1.0), 0.0)
        x = np.clip(x, 0.0, h)
        meet = np.where(denom > 0, fa + da * x, np.inf)
    inner = np.minimum(np.minimum(lin_a, lin_b), np.maximum(meet, np.maximum(fa, fb)))
    bound = np.max(inner, axis=-1)
    outward = (d[..., 0] < 0) | (d[..., -1] > 0)
    out: Array = np.where(outward, 0.0, np.minimum(bound, 0.0))
    return out
