"""The request-level test for sticky routing while the bucket groups have no usable history.

Sits under ``canary.analysis.rollout``; the group test it stands in for is
``canary.analysis.sticky``.

A sticky canary holds a fixed set of customers.  The group test learns from the history on
stable how often those customers fail compared with the others; until the first group has shown
``sticky.MIN_HISTORY_BAD`` bad events on stable it cannot (a rollout's pending phase is short, and
at a low bad rate it shows few), and the judge tests per request instead.  The plain request-level
test assumes that customers fail alike: with customers who differ it rolls back identical
releases (4% of them with a coefficient of variation of 3 at a 0.1% base rate and a 30 s history).

This one assumes less: that the canary's customers fail at most ``SPREAD`` times as often as
stable's on the same release.  Its null share of bad events is then ``pi_B = B*pi / (B*pi + 1 -
pi)`` (``pi`` the canary's share of requests, ``B = SPREAD``) instead of ``pi``, and the
likelihood ratio of ``canary rho times worse than that`` is the request-level one at the share
``pi_B``: a test supermartingale under every canary no worse and every spread up to ``B``
(``canary.analysis.sequential`` shows why), and a canary more than ``B`` times worse is rolled back.
Measured on the simulator's customers (``benchmarks/scenarios``: lognormal bad-rate multipliers,
300 to 1,000 customers): a bucket group's rate relative to the others exceeds 4x in fewer than
1 run in 1,000 at a coefficient of variation of 1 and about 1 in 50 at 3, where the plain test
assumes 1x.

It only fails a canary: while the canary's customers are unknown, the plain test's evidence still
holds a step (a hold is no rollback, and a canary failing 7 of 29 against stable's 0 of 56 must
not pass a step because the customers might explain it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
SPREAD = 4.0  # at most this many times as often: the canary's customers against stable's


def null_share(share: Array, spread: float = SPREAD) -> Array:
    """The canary's share of bad events when its customers fail ``spread`` times as often as stable's."""
    out: Array = np.where((share > 0) & (share < 1), spread * share / (spread * share + 1.0 - share), share)
    return out
