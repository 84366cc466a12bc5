"""What consumers saw, per service: requests, errors by status, latency percentiles, extra counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServiceRecord:
    requests: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    extra: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: str, seconds: float) -> None:
        """``outcome`` is ``ok``, an HTTP status such as ``500``, or an error kind (``timeout``)."""
        self.requests += 1
        self.latencies.append(seconds)
        if outcome == "ok":
            self.ok += 1
        else:
            self.errors[outcome] += 1

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "error_rate": round(sum(self.errors.values()) / self.requests, 4) if self.requests else 0.0,
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99)},
            **dict(sorted(self.extra.items())),
        }
