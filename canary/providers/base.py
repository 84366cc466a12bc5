"""The metric provider seam: counts per track for a metric, and turning cumulative counts into bins.

A provider answers with *cumulative* counts (events and bad events per track) as its source keeps
them; ``BinMaker`` turns successive readings into the per-bin increments the judge takes, treating
a counter that went down as a restart (the new reading counts from zero).  A provider that cannot
answer raises ``ProviderUnavailable`` with the reason: the rollout holds, it never rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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


@dataclass
class BinMaker:
    last: TrackCounts | None = None

    def next_bin(self, reading: TrackCounts) -> TrackCounts:
        previous, self.last = self.last, reading
        if previous is None:
            return TrackCounts(Counts(), Counts())
        return TrackCounts(_delta(previous.canary, reading.canary), _delta(previous.stable, reading.stable))


def _delta(before: Counts, now: Counts) -> Counts:
    if now.events < before.events or now.bad < before.bad:  # the source restarted: count from zero
        return now
    return Counts(now.events - before.events, now.bad - before.bad)
