"""Rollback policies replayed on simulated traffic: ours and the incumbents' documented settings.

Each policy takes per-second counts for many runs, shape (runs, seconds), and returns for every run
the second at which it rolled back (``nan`` when it never did).  All policies see the same traffic.
A policy judges whole intervals only: one whose interval is longer than the scenario never
decides, and reports no rollback in any run.

(``sequential``, ours, is the rollout judge itself and runs through ``canary.analysis.loop``.)
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

FloatArray = npt.NDArray[np.float64]
Policy = Callable[[Traffic, Scenario], FloatArray]


def _first(condition: npt.NDArray[np.bool_], seconds_per_step: float) -> FloatArray:
    if condition.shape[1] == 0:  # not one whole interval: the policy never decided
        return np.full(condition.shape[0], np.nan)
    hit = condition.any(axis=1)
    first = np.argmax(condition, axis=1).astype(np.float64)
    return np.where(hit, (first + 1) * seconds_per_step, np.nan)


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
    "flagger": _threshold_policy(60, 0.99, failure_limit=4, no_data_fails=True),
    "argo": _threshold_policy(300, 0.95, failure_limit=3, no_data_fails=False, consecutive_error_limit=4),
    "argo-tight": _threshold_policy(60, 0.99, failure_limit=0, no_data_fails=False, consecutive_error_limit=4),
}
