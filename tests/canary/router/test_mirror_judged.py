"""The router's mirror rule (``canary.router.compare.compare_mirrored``) fed to the judge's paired
test (``canary.analysis.mirror``), in the world the router runs in (``benchmarks.mirror_noise``:
JSON answers with an id that differs on every answer, a timestamp and a rare flag, learnt as noise
only once the baseline shows them).  A simulation: the counts are the router's, the verdicts the
controller's judge's; the benchmark runs it 1,000 times, this test 150."""

from __future__ import annotations

import numpy as np

from benchmarks.mirror_noise import judged

RUNS = 150


def test_a_healthy_canary_passes_beside_noise_the_baseline_teaches():
    code, _ = judged(RUNS, 0.0, with_baseline=True, seed=1)
    assert (code == 2).mean() <= 0.02  # at most alpha's share, with room for 150 runs' chance
    assert (code == 1).mean() >= 0.98
    # the same answers judged with no baseline: every id differs, and the canary fails each run
    alone, _ = judged(RUNS, 0.0, with_baseline=False, seed=1)
    assert (alone == 2).all()


def test_a_canary_wrong_on_a_quarter_of_answers_fails_within_100_compared():
    code, at = judged(RUNS, 0.25, with_baseline=True, seed=2)
    assert (code == 2).all()
    assert np.quantile(at, 0.9) <= 100
