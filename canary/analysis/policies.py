"""Rollback policies replayed on simulated traffic: ours and the incumbents' documented settings.

Each policy takes per-second counts for many runs, shape (runs, seconds), and returns for every run
the second at which it rolled back (``nan`` when it never did).  All policies see the same traffic.

- ``sequential``: the judge's regression test (``canary.analysis.sequential``) evaluated every
  second, with its guards (3 canary bad events, 20 canary requests); the objective test too when
  the scenario sets one (alpha split, shared misses never roll back).
- ``flagger``: every 60 s the canary's success rate over the last minute; below 99% or no data is a
  failed check; rollback at the 5th failed check (Flagger's ``interval: 1m``, ``threshold: 5``).
- ``argo``: every 5 minutes, success >= 95%, ``failureLimit: 3`` (rollback at the 4th failure);
  no data is a measurement error, and more than 4 consecutive errors abort the analysis.
- ``argo-tight``: every minute, success >= 99%, ``failureLimit: 0``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from canary.analysis.scenario import Scenario, Traffic
from canary.analysis.sequential import DEFAULT_RATIOS, mixture_log_e, objective_log_lr, regression_log_lr

FloatArray = npt.NDArray[np.float64]
Policy = Callable[[Traffic, Scenario], FloatArray]
ALPHA = 0.01
MIN_CANARY_BAD = 3
MIN_CANARY_REQUESTS = 20


def _first(condition: npt.NDArray[np.bool_], seconds_per_step: float) -> FloatArray:
    hit = condition.any(axis=1)
    first = np.argmax(condition, axis=1).astype(np.float64)
    return np.where(hit, (first + 1) * seconds_per_step, np.nan)


def sequential(tr: Traffic, scenario: Scenario) -> FloatArray:
    alpha = ALPHA / 2 if scenario.objective is not None else ALPHA
    log_lr = regression_log_lr(tr.canary_n, tr.canary_bad, tr.stable_n, tr.stable_bad, DEFAULT_RATIOS)
    log_e = mixture_log_e(np.cumsum(log_lr, axis=1))
    guards = (np.cumsum(tr.canary_bad, axis=1) >= MIN_CANARY_BAD) & (
        np.cumsum(tr.canary_n, axis=1) >= MIN_CANARY_REQUESTS
    )
    fail = (log_e >= np.log(1 / alpha)) & guards
    if scenario.objective is not None:
        p0 = scenario.objective
        need = np.log(2 / ALPHA)
        canary_obj = mixture_log_e(np.cumsum(objective_log_lr(tr.canary_n, tr.canary_bad, p0), axis=1))
        stable_obj = mixture_log_e(np.cumsum(objective_log_lr(tr.stable_n, tr.stable_bad, p0), axis=1))
        stable_rate = np.cumsum(tr.stable_bad, axis=1) / np.maximum(np.cumsum(tr.stable_n, axis=1), 1)
        stable_misses = (stable_obj >= need) | (stable_rate > p0)
        fail |= (canary_obj >= need) & ~stable_misses & guards
    return _first(fail, 1.0)


def _windows(counts: npt.NDArray[np.int64], interval: int) -> npt.NDArray[np.int64]:
    runs, seconds = counts.shape
    whole = seconds // interval
    summed: npt.NDArray[np.int64] = counts[:, : whole * interval].reshape(runs, whole, interval).sum(axis=2)
    return summed


def _threshold_policy(
    interval: int,
    min_success: float,
    failure_limit: int,
    no_data_fails: bool,
    consecutive_error_limit: int | None = None,
) -> Policy:
    def policy(tr: Traffic, scenario: Scenario) -> FloatArray:
        n = _windows(tr.canary_n, interval)
        bad = _windows(tr.canary_bad, interval)
        no_data = n == 0
        success = 1 - bad / np.maximum(n, 1)
        failed = (success < min_success) & ~no_data
        if no_data_fails:
            failed |= no_data
        rollback = np.cumsum(failed, axis=1) > failure_limit
        if consecutive_error_limit is not None:
            # consecutive no-data windows: reset the running count at every window with data
            idx = np.arange(no_data.shape[1])
            last_data = np.maximum.accumulate(np.where(~no_data, idx, -1), axis=1)
            rollback |= (idx - last_data) > consecutive_error_limit
        return _first(rollback, float(interval))

    return policy


POLICIES: dict[str, Policy] = {
    "sequential": sequential,
    "flagger": _threshold_policy(60, 0.99, failure_limit=4, no_data_fails=True),
    "argo": _threshold_policy(300, 0.95, failure_limit=3, no_data_fails=False, consecutive_error_limit=4),
    "argo-tight": _threshold_policy(60, 0.99, failure_limit=0, no_data_fails=False, consecutive_error_limit=4),
}
