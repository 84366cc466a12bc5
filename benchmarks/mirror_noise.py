"""The mirror in the world the router runs in: its counting rule with the judge's paired test.

Each mirrored request is answered by stable, the canary and a baseline (stable asked again, or a
copy); ``canary.router.compare.compare_mirrored`` counts the canary's and the baseline's
differences as the router does, learning noise only once the baseline shows it; the counts go to
``canary.analysis.mirror`` in one-second bins, as the controller gives them.  The answers are JSON
with fields that differ between any two answers of one release: an id on every answer, a
timestamp on about one pair in five, a flag on about one pair in fifty.  A canary may also be
wrong on a real field (its price) on a share of answers.

``python -m benchmarks.mirror_noise`` prints how often a healthy canary passes, and how soon a
canary wrong on a quarter of its answers fails; ``benchmarks.detection`` adds them to its JSON.
"""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt

from benchmarks.common import report
from canary.analysis.mirror import NO_BASELINE_RATE, MirrorState
from canary.analysis.spec import JudgeSpec
from canary.router.compare import Answer, compare_mirrored

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


def judged(
    runs: int, wrong_share: float, with_baseline: bool, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Per run, the verdict code (0 none yet, 1 pass, 2 fail) and the answers compared when it came."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((REQUESTS // PER_BIN, 4, runs))  # per bin: compared, different, the baseline's two
    for run in range(runs):
        noisy: set[str] = set()
        for n in range(REQUESTS):
            stable = answer(rng, n)
            canary = answer(rng, n, wrong=rng.random() < wrong_share)
            baseline = answer(rng, n) if with_baseline else None
            c = compare_mirrored(stable, canary, baseline, frozenset(), frozenset(noisy), 8.0)
            noisy |= c.learnt
            counts[n // PER_BIN, :, run] += [1, bool(c.canary), c.baseline is not None, bool(c.baseline)]
    state = MirrorState.new(runs)
    code, at = np.zeros(runs, dtype=np.int64), np.full(runs, np.nan)
    for compared, different, base_compared, base_different in counts:
        state.update_arrays(compared, different, base_compared, base_different, np.ones(runs), NO_BASELINE_RATE)
        new = state.codes(SPEC, TESTS)
        at = np.where((code == 0) & (new != 0), state.compared, at)
        code = np.where(code == 0, new, code)
    return code, at


def figures(runs: int = 1000) -> dict[str, float]:
    healthy, _ = judged(runs, 0.0, with_baseline=True, seed=11)
    alone, _ = judged(runs, 0.0, with_baseline=False, seed=11)
    wrong, at = judged(runs, 0.25, with_baseline=True, seed=12)
    return {
        "runs": runs,
        "healthy_pass_share": round(float((healthy == 1).mean()), 4),
        "healthy_fail_share": round(float((healthy == 2).mean()), 4),
        "healthy_without_baseline_fail_share": round(float((alone == 2).mean()), 4),
        "wrong_quarter_caught_share": round(float((wrong == 2).mean()), 4),
        "wrong_quarter_compared_median": round(float(np.nanquantile(at, 0.5)), 1),
        "wrong_quarter_compared_p90": round(float(np.nanquantile(at, 0.9)), 1),
    }


if __name__ == "__main__":
    report({"name": "mirror_noise", **figures()})
