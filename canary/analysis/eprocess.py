"""The judge's e-processes, for many runs at once (the live judge is one run, the simulator thousands).

Sits under ``canary.analysis.rollout``; the per-bin likelihood ratios come from
``canary.analysis.sequential``.

Change-point mixture (late onset)
---------------------------------
A canary that is healthy for 15 minutes and then breaks must not pay for the healthy minutes: the
product of likelihood ratios counted from the first request has drifted far below 1 at the large
ratios by then.  For every change point ``tau`` the product of the ratios of the bins after
``tau``, ``M^tau_t``, is a test martingale (it is 1 until ``tau``).  A fixed-weight average of test
martingales is one too, so

    E_t = 0.9 * M^0_t + 0.1 * sum_b w_b * M^(b * 10 s)_t,    w_b = b^-0.1 - (b+1)^-0.1  (sum 1)

is a test martingale: Ville's inequality bounds the chance that it ever reaches ``1/alpha`` by
``alpha``.  Change points are every 10 s of rollout time (``BLOCK_SECONDS``); the weights fall
slowly, so a fault after 15 minutes costs about 8 nats of evidence (two or three bad canary
requests) instead of all the healthy drift; one from the start costs ``log(1/0.9)``, a tenth of a
nat (the headline's two bad canary requests must suffice).  The recursion is
``S_t = LR_t * (S_{t-1} + w_b [b starts now])``, so the state stays one number per ratio.
Unstarted change points contribute their weight times 1 (their martingales have not moved).

Within a bin (``peak_within_bin``)
----------------------------------
The router counts per bin, so a bin's bad events arrive together; the e-process is still a test
martingale event by event, in any order chosen without looking at the events' tracks, where the
null share is the design weight (the router put each request on the canary independently with
that weight, so under "no worse" each bad event is, independently).  An ordering of a bin's
events drawn uniformly at random (here: pseudo-random, seeded by what the null fixes, never by the
tracks) then gives a sequence of independent events, each on the canary with the null share, so
Ville's inequality holds for the process read after every event, not only at the bins' ends.
Reading it there rolls a total break back in the bin where its evidence first suffices, not one
where stable's bad events that came after have pulled it back down (the headline's median falls
from 10 s to 9 s).  Where the share is a bin's realised split (sticky routing, a weight the router
did not confirm), a bin's events are a draw without replacement from its requests, and the bin is
read at its end only (``ordered``).  At most ``PREFIX_CHECKS`` events of a
bin are read one by one (reading fewer times keeps the guarantee); the bin's end is always read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
BLOCK_SECONDS = 10.0
START_WEIGHT = 0.9  # of the change point at the start; the rest is spread over later ones
NEG_INF = -math.inf
PREFIX_CHECKS = 64  # events of one bin read one by one; the rest only at the bin's end


def block_weight(b: npt.NDArray[np.int64]) -> Array:
    bf = b.astype(np.float64)
    out: Array = bf**-0.1 - (bf + 1.0) ** -0.1
    return out


@dataclass
class ChangePointProcess:
    """``E_t`` above for each of ``columns`` alternatives (ratios), shape (runs, columns)."""

    log_m0: Array
    log_s: Array
    started: Array  # (runs,) total weight of the change points already started
    next_block: npt.NDArray[np.int64]  # (runs,)
    seconds: Array  # (runs,)

    @classmethod
    def new(cls, runs: int, columns: int) -> ChangePointProcess:
        return cls(
            log_m0=np.zeros((runs, columns)),
            log_s=np.full((runs, columns), NEG_INF),
            started=np.zeros(runs),
            next_block=np.ones(runs, dtype=np.int64),
            seconds=np.zeros(runs),
        )

    def update(self, log_lr: Array, seconds: Array) -> None:
        """Add one bin: ``log_lr`` (runs, columns), ``seconds`` (runs,) the bin's length."""
        self.open_due()
        self.log_m0 = self.log_m0 + log_lr
        self.log_s = self.log_s + log_lr
        self.seconds = self.seconds + seconds

    def open_due(self) -> None:
        """Start the change points whose time has come (before the next bin's ratios)."""
        while True:
            due = self.next_block * BLOCK_SECONDS <= self.seconds
            if not due.any():
                break
            w = block_weight(self.next_block)
            self.log_s = np.where(due[:, None], np.logaddexp(self.log_s, np.log(w)[:, None]), self.log_s)
            self.started = np.where(due, self.started + w, self.started)
            self.next_block = np.where(due, self.next_block + 1, self.next_block)

    def rows(self, index: npt.NDArray[np.int64]) -> ChangePointProcess:
        """A copy of some runs only."""
        return ChangePointProcess(
            self.log_m0[index], self.log_s[index], self.started[index], self.next_block[index], self.seconds[index]
        )

    def log_e_columns(self, extra: Array | float = 0.0) -> Array:
        """log E_t per column (runs, columns); ``extra``: log ratios not yet added (a bin's first events)."""
        rest = np.log(np.maximum(1.0 - self.started, 1e-300))[:, None]
        later = np.logaddexp(self.log_s + extra, rest) + math.log(1 - START_WEIGHT)
        out: Array = np.logaddexp(self.log_m0 + extra + math.log(START_WEIGHT), later)
        return out

    def log_e(self, weights: Array | None = None, extra: Array | float = 0.0) -> Array:
        """log of the mixture over the columns (fixed weights summing to 1; equal by default), (runs,)."""
        cols = self.log_e_columns(extra)
        if weights is None:
            out: Array = np.logaddexp.reduce(cols, axis=1) - math.log(cols.shape[1])
            return out
        weighted: Array = np.logaddexp.reduce(cols + np.log(weights)[None, :], axis=1)
        return weighted

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_m0": _floats(self.log_m0),
            "log_s": _floats(self.log_s),
            "started": _floats(self.started),
            "next_block": self.next_block.tolist(),
            "seconds": _floats(self.seconds),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChangePointProcess:
        return cls(
            log_m0=_array(data["log_m0"]),
            log_s=_array(data["log_s"]),
            started=_array(data["started"]),
            next_block=np.asarray(data["next_block"], dtype=np.int64),
            seconds=_array(data["seconds"]),
        )


def share_log_lr(canary_bad: Array, stable_bad: Array, share: Array, ratios: Array) -> Array:
    """log LR_r of one bin given the canary's null share ``share`` of bad events: (runs, ratios).

    ``share`` is the design weight where routing is per request (each request independently on
    the canary with that probability, so each bad event is, under "no worse"), or the bin's
    realised split; a share of 0 or 1 (nothing to compare) gives 0.
    """
    xc = canary_bad[:, None]
    k = xc + stable_bad[:, None]
    pi = share[:, None]
    usable = (pi > 0) & (pi < 1)
    out: Array = np.where(usable, xc * np.log(ratios) - k * np.log1p((ratios - 1.0) * pi), 0.0)
    return out


def peak_within_bin(
    process: ChangePointProcess,
    canary_bad: Array,
    stable_bad: Array,
    share: Array,
    ratios: Array,
    weights: Array,
    seed: list[int],
    floor: float,
    ordered: npt.NDArray[np.bool_],
) -> Array:
    """The largest log E the process reaches after any of the bin's first events, in a random order
    (module docstring), before the bin is added: (runs,), ``-inf`` where no event can take it past
    ``floor`` (the lowest level a verdict compares it with), or the bin's order cannot matter.

    Call it after ``open_due`` and before ``update`` with the same bin; ``ordered``: the runs whose
    ``share`` is the design weight (the others are read at the bin's end only).
    """
    xc, xs = canary_bad, stable_bad
    peak = np.full(len(xc), NEG_INF)
    # the best order puts the canary's events first: where even that stays under the floor, or
    # one track has no event (the extremes are the bin's ends, read anyway), nothing to read
    rows = np.flatnonzero(ordered & (share > 0) & (share < 1) & (xc > 0) & (xs > 0))
    if not len(rows):
        return peak
    per_event = np.log1p((ratios[None, :] - 1.0) * share[rows, None])  # log(1 + (r-1) w) per event
    sub = process.rows(rows)
    best = sub.log_e(weights, xc[rows, None] * (np.log(ratios)[None, :] - per_event))
    keep = best >= floor
    rows, sub, per_event = rows[keep], sub.rows(np.flatnonzero(keep)), per_event[keep]
    if not len(rows):
        return peak
    xc, k = xc[rows], xc[rows] + xs[rows]
    rng = np.random.default_rng(seed)
    seen = np.zeros(len(rows))
    top = np.full(len(rows), NEG_INF)
    for j in range(1, int(min(k.max(), PREFIX_CHECKS)) + 1):
        seen = canary_among_first(j, seen, xc, k, rng)
        now = sub.log_e(weights, seen[:, None] * np.log(ratios)[None, :] - j * per_event)
        top = np.where(j <= k, np.maximum(top, now), top)
    peak[rows] = top
    return peak


def canary_among_first(j: int, seen: Array, canary: Array, total: Array, rng: np.random.Generator) -> Array:
    """How many of a bin's first ``j`` events, in a uniformly random order, are on the canary, given
    ``seen`` among the first ``j - 1``: the ``j``-th is with the share of canary events left."""
    left = total - (j - 1)
    p = np.where(left > 0, (canary - seen) / np.maximum(left, 1.0), 0.0)
    out: Array = seen + (rng.random(len(seen)) < p)
    return out


def bin_order_seed(*levels: Array) -> list[int]:
    """The seed of a bin's event order, from counts the null fixes (requests, all bad events):
    never from which track the bad events fell on, so the order is independent of them."""
    return [int(v.sum()) % (2**63) if np.isfinite(v).all() else 0 for v in levels]


def _floats(a: Array) -> list[Any]:
    # JSON has no -inf: it is stored as None
    out: list[Any] = _none(np.where(np.isfinite(a), a, np.nan).tolist())
    return out


def _none(v: Any) -> Any:
    if isinstance(v, list):
        return [_none(x) for x in v]
    return None if isinstance(v, float) and math.isnan(v) else v


def _array(v: Any) -> Array:
    a = np.asarray(_unnone(v), dtype=np.float64)
    return a


def _unnone(v: Any) -> Any:
    if isinstance(v, list):
        return [_unnone(x) for x in v]
    return NEG_INF if v is None else v


floats = _floats
array = _array
