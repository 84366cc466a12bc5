"""The mirror phase's statistics: the canary's differences judged against stable-vs-baseline noise.

Sits beside ``canary.analysis.rollout`` (the facade calls it during the mirror phase).  Each
mirrored request is answered by stable and the canary (and, where there is one, by a baseline: a
copy of stable, or stable asked a second time); the router compares stable's answer with each
(``canary.router.compare.compare_mirrored``; simulated with this test in
``benchmarks.mirror_noise``).  What differs between stable and the baseline is noise (timestamps,
ids, a field that is not deterministic).  Under "the canary differs no more often than the
baseline", each difference falls on the canary's comparisons with their share of the comparisons,
so the regression test of ``canary.analysis.eprocess`` applies unchanged, at the same kind of
anytime-valid guarantee (and its share of the rollout's alpha).
Without a baseline the canary's difference rate is tested against ``max_different_share`` (or
0.1% when that is 0) as an objective.  It passes once ``min_compared`` answers and ``min_seconds``
are reached without the test crossing; ``max_seconds`` without a pass is inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from canary.analysis.eprocess import array, floats, share_log_lr
from canary.analysis.sequential import DEFAULT_RATIOS, objective_log_lr
from canary.analysis.spec import JudgeSpec

Array = npt.NDArray[np.float64]
RATIOS = np.asarray(DEFAULT_RATIOS)
NO_BASELINE_RATE = 1e-3


@dataclass(frozen=True)
class MirrorBin:
    compared: int  # canary answers compared with stable's
    different: int
    baseline_compared: int = 0  # baseline answers compared with stable's (the noise)
    baseline_different: int = 0


@dataclass
class MirrorState:
    log_lr: Array  # (runs, R)
    compared: Array
    different: Array
    baseline_compared: Array
    baseline_different: Array
    seconds: Array

    @classmethod
    def new(cls, runs: int) -> MirrorState:
        z = np.zeros(runs)
        return cls(np.zeros((runs, len(RATIOS))), z.copy(), z.copy(), z.copy(), z.copy(), z.copy())

    def update_arrays(
        self,
        compared: Array,
        different: Array,
        base_compared: Array,
        base_different: Array,
        seconds: Array,
        p0: float,
        expects_baseline: bool = False,
    ) -> None:
        """One bin per run.  A bin with canary comparisons but none of the baseline's, once the
        baseline has answered, teaches nothing (its differences are the canary's with certainty
        under either hypothesis).  With ``expects_baseline`` (the spec asks for one), the canary's
        comparisons are not counted until the baseline's first: judging them against the
        objective would be the wrong test, and passing on them would be passing blind."""
        if np.any((different > compared) | (base_different > base_compared) | (different < 0) | (base_different < 0)):
            raise ValueError("mirror counts: differences must be between 0 and the answers compared")
        has_base = self.baseline_compared + base_compared > 0
        if expects_baseline:
            compared, different = np.where(has_base, compared, 0.0), np.where(has_base, different, 0.0)
        with_base = (compared > 0) & (base_compared > 0)
        share = np.where(with_base, compared / np.maximum(compared + base_compared, 1), 0.0)
        paired = share_log_lr(different, base_different, share, RATIOS)
        alone = objective_log_lr(compared, different, p0, DEFAULT_RATIOS)
        self.log_lr += np.where(has_base[:, None], paired, alone)
        self.compared += compared
        self.different += different
        self.baseline_compared += base_compared
        self.baseline_different += base_different
        self.seconds += seconds

    def update(
        self, b: MirrorBin, seconds: float, p0: float = NO_BASELINE_RATE, expects_baseline: bool = False
    ) -> None:
        def one(v: int) -> Array:
            return np.asarray([float(v)])

        self.update_arrays(
            one(b.compared),
            one(b.different),
            one(b.baseline_compared),
            one(b.baseline_different),
            np.asarray([seconds]),
            p0,
            expects_baseline,
        )

    def log_e(self) -> Array:
        out: Array = np.logaddexp.reduce(self.log_lr, axis=1) - math.log(self.log_lr.shape[1])
        return out

    def codes(self, spec: JudgeSpec, tests: int) -> npt.NDArray[np.int64]:
        """0 continue, 1 pass, 2 fail, 3 inconclusive per run (as ``canary.analysis.rollout``)."""
        rule = spec.mirror
        assert rule is not None
        fail = self.log_e() >= math.log(tests / spec.alpha)
        done = (self.compared >= rule.min_compared) & (self.seconds >= rule.min_seconds)
        out = np.where(done, 1, np.where(self.seconds >= rule.max_seconds, 3, 0))
        result: npt.NDArray[np.int64] = np.where(fail, 2, out).astype(np.int64)
        return result

    def verdict(self, spec: JudgeSpec, tests: int) -> tuple[Any, str]:
        from canary.analysis.rollout import CODES

        code = int(self.codes(spec, tests)[0])
        e = math.exp(min(float(self.log_e()[0]), 700.0))
        words = (
            f"{int(self.different[0])} of {int(self.compared[0])} canary answers differ, "
            f"{int(self.baseline_different[0])} of {int(self.baseline_compared[0])} baseline answers (noise); "
            f"e-value {e:.3g} (fails at {tests / spec.alpha:g})"
        )
        if spec.mirror is not None and spec.mirror.baseline and not self.baseline_compared[0]:
            words += (
                "; waiting for the baseline's answers (the spec asks for mirror.baseline: stable and the routers"
                " have counted none: are they older than the spec?); the canary's are not judged until then"
            )
        return CODES[code], words

    def to_dict(self) -> dict[str, Any]:
        return {k: floats(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MirrorState:
        return cls(**{k: array(data[k]) for k in cls.__dataclass_fields__})
