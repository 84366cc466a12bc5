"""The sample-ratio check on customers, for sticky routing: does the canary hold the share of
customers it was given?  Many runs at once.

Under sticky routing the canary's share of *requests* is not the weight: customers differ in how
much they ask, so a fixed set of them asks for more or less than its share.  But each customer's
salted hash is uniform on the hash space, so the customers a router has seen fall into the
rollout's bucket groups in proportion to the groups' widths, whatever each asks and however often.
A hash that skews (a router on another hashing than the table's groups, a key whose values cluster
in the hash) breaks that, and the canary then serves another share of the customers than the
release engineer asked for.

The router counts, per bucket group, the distinct customers it has seen since the rollout's salt
came into its table (a level, capped: ``canary.router.stats``).  The test is the e-value of a
Dirichlet-multinomial mixture against the multinomial of the groups' widths: as customers arrive
one by one it is a Pólya urn's likelihood ratio, a test martingale under "each new customer falls
in a group with the group's width", so it is valid whenever it is read.  The mixture is over a few
concentrations (a large skew is seen in a few hundred customers, a small one in many thousands).  A
restarted router counts afresh, and its level replaces the old one: the test starts again on it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from canary.analysis.rollout import canary_groups
from canary.analysis.spec import BUCKETS, JudgeSpec

Array = npt.NDArray[np.float64]
# Dirichlet concentrations: the prior's "customers' worth" of belief in the widths (small: a large
# skew is likely; large: a small one)
CONCENTRATIONS = (30.0, 300.0, 3000.0)
_SHIFT = 8  # lgamma by Stirling's series from x + _SHIFT on (error below 1e-12 for x > 0)


def group_widths(spec: JudgeSpec) -> Array:
    """Each bucket group's share of the hash space, the reference group last."""
    cuts = np.asarray((0, *spec.bucket_boundaries, BUCKETS), dtype=np.float64)
    out: Array = np.diff(cuts) / BUCKETS
    return out


def customers_log_e(customers: Array, widths: Array) -> Array:
    """Per run, the log e-value against "customers fall in the groups by the groups' widths".

    ``customers``: (runs, G+1) distinct customers seen per group; ``widths``: (G+1,), summing to 1.
    Groups of no width take no customer under the null: one seen there is not counted (the
    router's group cut and the table's disagree; the misrouting check sees that)."""
    p = np.clip(widths, 1e-12, None)
    n = np.where(widths > 0, customers, 0.0)
    total = n.sum(axis=1)
    null = (n * np.log(p)).sum(axis=1)
    logs = []
    for c in CONCENTRATIONS:
        a = c * p
        mixed = (_lgamma(a[None, :] + n) - _lgamma(a)[None, :]).sum(axis=1) + math.lgamma(c) - _lgamma(c + total)
        logs.append(mixed - null)
    out: Array = np.logaddexp.reduce(np.stack(logs), axis=0) - math.log(len(CONCENTRATIONS))
    return out


def canary_share(customers: Array, widths: Array, step: npt.NDArray[np.int64]) -> tuple[Array, Array]:
    """Per run, (the canary's groups' share of the customers seen, their share of the hash space)."""
    on = canary_groups(step, len(widths))
    seen = customers.sum(axis=1)
    share: Array = np.where(seen > 0, (customers * on).sum(axis=1) / np.maximum(seen, 1.0), 0.0)
    asked: Array = (widths[None, :] * on).sum(axis=1)
    return share, asked


def _lgamma(x: Array | float) -> Array:
    """log Gamma(x) for x > 0, elementwise (numpy has none): Stirling's series past a shift."""
    v = np.asarray(x, dtype=np.float64)
    shift = np.zeros_like(v)
    y = v.copy()
    for _ in range(_SHIFT):
        shift += np.log(y)
        y = y + 1.0
    inv = 1.0 / y
    inv2 = inv * inv
    series = inv * (1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 / 1680)))
    out: Array = (y - 0.5) * np.log(y) - y + 0.5 * math.log(2 * math.pi) + series - shift
    return out
