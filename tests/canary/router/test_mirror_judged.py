"""The router's mirror rule (``canary.router.compare.compare_mirrored``) fed to the judge's paired
test (``canary.analysis.mirror``), in the world the router runs in: JSON answers with fields that
differ between any two answers of one release at different rates (an id on every answer, a
timestamp on about one in five pairs, a flag on about one in fifty), learnt as noise only once the
baseline shows them, and a canary that may also be wrong on a real field.  A simulation: the
counts are the router's, the verdicts the controller's judge's."""

from __future__ import annotations

import json

import numpy as np

from canary.analysis.mirror import NO_BASELINE_RATE, MirrorState
from canary.analysis.spec import JudgeSpec
from canary.router.compare import Answer, compare_mirrored

RUNS = 150
REQUESTS = 300
PER_BIN = 5  # compared per second
SPEC = JudgeSpec.from_mapping(
    {"steps": [{"weight": 5}], "metrics": [{"name": "errors"}], "mirror": {"min_compared": 200, "max_seconds": 600}}
)
TESTS = 2  # the metric and the mirror share the rollout's alpha


def answer(rng: np.random.Generator, item: int, wrong: bool = False) -> Answer:
    body = {
        "item": item,
        "price": item * 10 + int(wrong),
        "id": int(rng.integers(1 << 40)),
        "at": int(rng.integers(1, 1 << 30)) if rng.random() < 0.1 else 0,
        "flag": bool(rng.random() < 0.01),
    }
    return Answer(200, "application/json", json.dumps(body).encode())


def judged(wrong_share: float, with_baseline: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run, the verdict code (1 pass, 2 fail) and the answers compared when it came."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((REQUESTS // PER_BIN, 4, RUNS))  # per bin: compared, different, baseline's two
    for run in range(RUNS):
        noisy: set[str] = set()
        for n in range(REQUESTS):
            stable = answer(rng, n)
            canary = answer(rng, n, wrong=rng.random() < wrong_share)
            baseline = answer(rng, n) if with_baseline else None
            c = compare_mirrored(stable, canary, baseline, frozenset(), frozenset(noisy), 8.0)
            noisy |= c.learnt
            row = counts[n // PER_BIN, :, run]
            row += [1, bool(c.canary), c.baseline is not None, bool(c.baseline)]
    state = MirrorState.new(RUNS)
    code, at = np.zeros(RUNS, dtype=np.int64), np.full(RUNS, np.nan)
    for compared, different, base_compared, base_different in counts:
        state.update_arrays(compared, different, base_compared, base_different, np.ones(RUNS), NO_BASELINE_RATE)
        new = state.codes(SPEC, TESTS)
        at = np.where((code == 0) & (new != 0), state.compared, at)
        code = np.where(code == 0, new, code)
    return code, at


def test_a_healthy_canary_passes_beside_noise_the_baseline_teaches():
    code, _ = judged(0.0, with_baseline=True, seed=1)
    assert (code == 2).mean() <= 0.02  # at most alpha's share, with room for 150 runs' chance
    assert (code == 1).mean() >= 0.98
    # the same answers judged with no baseline: every id differs, and the canary fails each run
    alone, _ = judged(0.0, with_baseline=False, seed=1)
    assert (alone == 2).all()


def test_a_canary_wrong_on_a_quarter_of_answers_fails_within_100_compared():
    code, at = judged(0.25, with_baseline=True, seed=2)
    assert (code == 2).all()
    assert np.quantile(at, 0.9) <= 100
