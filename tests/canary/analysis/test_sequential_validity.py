"""The regression test's guarantee, checked by simulation (fixed seeds), not by the formula.

Under "canary no worse", the chance of ever crossing 1/alpha must stay below alpha however the
split moves, whatever the base rate, with or without shared bursts, looking after every bin.
"""

from __future__ import annotations

import numpy as np
import pytest

from canary.analysis.intervals import wilson
from canary.analysis.sequential import mixture_log_e, regression_log_lr

ALPHA = 0.05  # larger than the default so that a broken test would show in a few thousand runs


def ever_crosses(cn, cb, sn, sb, alpha=ALPHA) -> np.ndarray:
    log_e = mixture_log_e(np.cumsum(regression_log_lr(cn, cb, sn, sb), axis=1))
    return (log_e >= np.log(1 / alpha)).any(axis=1)


def healthy_counts(rng, runs, bins, n_per_bin, share, rate):
    total = rng.poisson(n_per_bin, size=(runs, bins))
    cn = rng.binomial(total, share)
    sn = total - cn
    return cn, rng.binomial(cn, rate), sn, rng.binomial(sn, rate)


@pytest.mark.parametrize(
    ("share", "rate", "n_per_bin"),
    [
        (0.05, 0.001, 100),  # the usual canary
        (0.5, 0.2, 6),  # tiny bins, high rate: where the hypergeometric law matters
        (0.01, 0.01, 100),  # very unequal split
        (0.3, 0.0005, 50),  # rare events
    ],
)
def test_false_alarm_rate_stays_below_alpha_without_any_guard(share, rate, n_per_bin):
    rng = np.random.default_rng(1234)
    runs = 4000
    crossed = ever_crosses(*healthy_counts(rng, runs, 300, n_per_bin, share, rate))
    false_rate = crossed.mean()
    low, _ = wilson(crossed.sum(), runs)
    assert low < ALPHA, f"false alarms {false_rate:.3%}: the test is not valid here"
    assert false_rate <= ALPHA


def test_valid_when_the_split_moves_and_both_tracks_fail_together():
    rng = np.random.default_rng(99)
    runs, bins = 3000, 600
    share = np.repeat([0.01, 0.05, 0.2, 0.5, 0.8, 0.5], 100)
    rate = np.full(bins, 0.002)
    rate[200:320] = 0.4  # a shared dependency fails both tracks
    total = rng.poisson(80, size=(runs, bins))
    cn = rng.binomial(total, share)
    sn = total - cn
    crossed = ever_crosses(cn, rng.binomial(cn, rate), sn, rng.binomial(sn, rate))
    assert crossed.mean() <= ALPHA


def test_a_better_canary_is_not_failed():
    rng = np.random.default_rng(7)
    cn, _, sn, sb = healthy_counts(rng, 2000, 300, 100, 0.2, 0.01)
    cb = rng.binomial(cn, 0.002)  # the canary fails five times less often
    assert ever_crosses(cn, cb, sn, sb).mean() <= ALPHA / 10


def test_empty_bins_and_bins_without_bad_events_change_nothing():
    lr = regression_log_lr([0, 10, 5, 0], [0, 0, 0, 0], [100, 0, 50, 0], [3, 0, 0, 0])
    assert np.all(lr == 0)


def test_the_change_point_mixture_keeps_alpha_under_a_moving_split_and_a_shared_burst():
    from canary.analysis.eprocess import ChangePointProcess, share_log_lr
    from canary.analysis.rollout import RATIO_WEIGHTS, RATIOS

    rng = np.random.default_rng(31)
    runs, bins = 3000, 400
    share = np.repeat([0.01, 0.05, 0.25, 0.5], 100)
    rate = np.full(bins, 0.01)
    rate[150:200] = 0.3  # a shared dependency fails both tracks
    process = ChangePointProcess.new(runs, len(RATIOS))
    crossed = np.zeros(runs, dtype=bool)
    for t in range(bins):
        total = rng.poisson(50, runs)
        cn = rng.binomial(total, share[t])
        cb, sb = rng.binomial(cn, rate[t]), rng.binomial(total - cn, rate[t])
        process.update(share_log_lr(cb * 1.0, sb * 1.0, np.full(runs, share[t]), RATIOS), np.ones(runs))
        crossed |= process.log_e(RATIO_WEIGHTS) >= np.log(1 / ALPHA)
    assert crossed.mean() <= ALPHA
