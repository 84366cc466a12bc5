"""Watching a promoted release for late failures: a mixture Shiryaev-Roberts change detector.

After promotion there is no second track to compare with, so the new release's bad rate is
compared with a reference rate ``p0`` (stable's, measured before promotion, with a floor).  For a
change to ``rho * p0`` the Shiryaev-Roberts statistic is ``R_t = (1 + R_{t-1}) * LR_t``; under no
change ``R_t - t`` is a martingale, so the mean number of bins to a false alarm at threshold ``A``
is at least ``A`` (Pollak 1985), and the same holds for an equal-weight average over ``rho``.  With
10-second bins and ``A = 1e5`` that is over eleven days between false alarms on average, while a
failure like the image service's in the incident (errors rising 1.5 hours after the release) is flagged within minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_RHOS = (2.0, 3.0, 5.0, 10.0, 30.0, 100.0)


@dataclass
class ChangeDetector:
    reference_rate: float
    threshold: float = 1e5
    rhos: tuple[float, ...] = DEFAULT_RHOS
    min_bad: int = 3
    log_r: list[float] = field(default_factory=list)
    bins: int = 0
    requests: int = 0
    bad: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.reference_rate < 1:
            raise ValueError("reference_rate must be between 0 and 1")

    def update(self, requests: int, bad: int) -> bool:
        """Add one bin; True when a change is flagged."""
        p0 = self.reference_rate
        p1 = np.minimum(np.asarray(self.rhos) * p0, 0.999)
        log_lr = bad * np.log(p1 / p0) + (requests - bad) * (np.log1p(-p1) - np.log1p(-p0))
        previous = np.asarray(self.log_r if self.log_r else [-np.inf] * len(self.rhos))
        self.log_r = [float(v) for v in np.logaddexp(0.0, previous) + log_lr]
        self.bins += 1
        self.requests += requests
        self.bad += bad
        return self.alarm

    @property
    def log_statistic(self) -> float:
        if not self.log_r:
            return -math.inf
        return float(np.logaddexp.reduce(np.asarray(self.log_r)) - math.log(len(self.rhos)))

    @property
    def alarm(self) -> bool:
        return self.bad >= self.min_bad and self.log_statistic >= math.log(self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChangeDetector:
        data = dict(data)
        data["rhos"] = tuple(data.get("rhos", DEFAULT_RHOS))
        return cls(**data)
