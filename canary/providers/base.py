"""The metric provider seam: counts per track for a metric, and turning cumulative counts into bins.

A provider answers with *cumulative* counts (events and bad events per track) as its source keeps
them; ``BinMaker`` turns successive readings into the per-bin increments the judge takes, each with
its measured length from the caller's clock, treating a counter that went down as a restart (the
new reading counts from zero).  A provider that cannot
answer raises ``ProviderUnavailable`` with the reason: the rollout holds, it never rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import DependencyUnavailable


class ProviderUnavailable(DependencyUnavailable):
    """The metric source did not answer, or answered nothing usable; the reason says which."""


@dataclass(frozen=True)
class Counts:
    events: int = 0
    bad: int = 0


@dataclass(frozen=True)
class TrackCounts:
    canary: Counts
    stable: Counts


@dataclass(frozen=True)
class MetricQuery:
    service: str
    kind: str  # errors, latency, conservation, mirror
    canary_release: str
    stable_release: str
    threshold_ms: float | None = None
    events_query: str | None = None  # a query metric's own templates (Prometheus)
    bad_query: str | None = None


class MetricProvider(Protocol):
    async def cumulative(self, query: MetricQuery) -> TrackCounts: ...


@dataclass(frozen=True)
class Bin:
    """The increments since the previous reading, and how long that was (by the injected clock)."""

    canary: Counts
    stable: Counts
    seconds: float


@dataclass
class BinMaker:
    last: TrackCounts | None = None
    last_at: float | None = None  # when ``last`` was read

    def next_bin(self, reading: TrackCounts, now: float) -> Bin:
        previous, previous_at = self.last, self.last_at
        self.last, self.last_at = reading, now
        if previous is None or previous_at is None:
            return Bin(Counts(), Counts(), 0.0)
        seconds = max(0.0, now - previous_at)
        return Bin(_delta(previous.canary, reading.canary), _delta(previous.stable, reading.stable), seconds)

    def to_dict(self) -> dict[str, Any]:
        last = self.last
        counts = None if last is None else [last.canary.events, last.canary.bad, last.stable.events, last.stable.bad]
        return {"last": counts, "last_at": self.last_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinMaker:
        c = data.get("last")
        last = None if c is None else TrackCounts(Counts(int(c[0]), int(c[1])), Counts(int(c[2]), int(c[3])))
        return cls(last, data.get("last_at"))


def _delta(before: Counts, now: Counts) -> Counts:
    if now.events < before.events or now.bad < before.bad:  # the source restarted: count from zero
        return now
    return Counts(now.events - before.events, now.bad - before.bad)
