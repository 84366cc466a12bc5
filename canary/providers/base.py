"""The metric provider seam: counts per track for a metric, and turning cumulative counts into bins.

A provider answers with *cumulative* counts (events and bad events per track) as its source keeps
them; ``BinMaker`` turns successive readings into the per-bin increments the judge takes, each with
its measured length from the caller's clock, treating a counter that went down as a restart (the
new reading counts from zero).  A provider that cannot
answer raises ``ProviderUnavailable`` with the reason: the rollout holds, it never rolls back.
"""

from __future__ import annotations

from collections.abc import Mapping
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
class GroupTotals:
    """A sticky bucket group's requests (whatever track served them), bad events, canary-served; and
    the distinct customers the router has seen in the group (a level: never differenced)."""

    requests: int = 0
    bad: int = 0
    canary_requests: int = 0
    customers: int = 0


@dataclass(frozen=True)
class SlowTotals:
    """Requests slower than ``le_ms`` per track (one boundary of the router's latency buckets)."""

    le_ms: float
    canary: int = 0
    stable: int = 0


@dataclass(frozen=True)
class TrackCounts:
    # per track; a mirror metric: the canary's answers compared with stable's, and on the stable
    # side a baseline's answers compared with stable's (the noise; nothing without a baseline)
    canary: Counts
    stable: Counts
    # sticky routing: per bucket group of the rollout's salt, the reference group last (empty: not counted)
    groups: tuple[GroupTotals, ...] = ()
    slower: tuple[SlowTotals, ...] = ()  # latency: per histogram boundary (empty: not asked or not known)


@dataclass(frozen=True)
class MetricQuery:
    service: str
    kind: str  # errors, latency, conservation, mirror
    canary_release: str
    stable_release: str
    threshold_ms: float | None = None
    events_query: str | None = None  # a query metric's own templates (Prometheus)
    bad_query: str | None = None
    # sticky: the rollout's salt and its bucket-group boundaries; the provider answers ``groups``
    # when its source counted them for this salt (else leaves them empty)
    sticky_salt: str = ""
    sticky_groups: tuple[int, ...] = ()
    # the canary track may have no series (the watch after a promotion with no old release kept
    # warm on it): it counts as nothing served, not as a source that does not answer
    canary_optional: bool = False


@dataclass(frozen=True)
class ConservationCounters:
    """Where a service's ``conservation`` metric is read: catalog data (the ``conservation`` of one of
    its queue consumers), handed to a provider when it is made, per service.  The counters are
    Prometheus counters labelled ``release``: messages the consumer acknowledged, and those it then
    accounted for (recorded, or dropped on purpose); an acknowledged message in none is a bad event."""

    consumer: str  # the consumer's name: the platform runs its processes under it
    acknowledged: str
    accounted: tuple[str, ...]
    metrics_path: str = "/metrics"  # where the consumer's own process exposes them (builtin provider)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.acknowledged, *self.accounted)


def conservation_of(sources: Mapping[str, ConservationCounters], service: str) -> ConservationCounters:
    """The service's conservation counters, or why there are none (the rollout holds, with the reason)."""
    source = sources.get(service)
    if source is None:
        raise ProviderUnavailable(
            f"{service} has no queue consumer with conservation counters in the catalog "
            "(consumers[].conservation: the counters a conservation metric reads)"
        )
    return source


class MetricProvider(Protocol):
    async def cumulative(self, query: MetricQuery) -> TrackCounts: ...


@dataclass(frozen=True)
class Bin:
    """The increments since the previous reading, and how long that was (by the injected clock)."""

    canary: Counts
    stable: Counts
    seconds: float
    groups: tuple[GroupTotals, ...] = ()  # increments, as the reading's (empty when either lacks them)
    slower: tuple[SlowTotals, ...] = ()


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
        return Bin(
            _delta(previous.canary, reading.canary),
            _delta(previous.stable, reading.stable),
            seconds,
            _group_deltas(previous.groups, reading.groups),
            _slow_deltas(previous.slower, reading.slower),
        )

    def to_dict(self) -> dict[str, Any]:
        last = self.last
        if last is None:
            return {"last": None, "last_at": self.last_at}
        return {
            "last": [last.canary.events, last.canary.bad, last.stable.events, last.stable.bad],
            "groups": [[g.requests, g.bad, g.canary_requests, g.customers] for g in last.groups],
            "slower": [[s.le_ms, s.canary, s.stable] for s in last.slower],
            "last_at": self.last_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinMaker:
        c = data.get("last")
        if c is None:
            return cls(None, data.get("last_at"))
        groups = tuple(
            GroupTotals(int(g[0]), int(g[1]), int(g[2]), int(g[3]) if len(g) > 3 else 0) for g in data.get("groups", [])
        )
        slower = tuple(SlowTotals(float(s[0]), int(s[1]), int(s[2])) for s in data.get("slower", []))
        last = TrackCounts(Counts(int(c[0]), int(c[1])), Counts(int(c[2]), int(c[3])), groups, slower)
        return cls(last, data.get("last_at"))


def _delta(before: Counts, now: Counts) -> Counts:
    if now.events < before.events or now.bad < before.bad:  # the source restarted: count from zero
        return now
    return Counts(now.events - before.events, now.bad - before.bad)


def _group_deltas(before: tuple[GroupTotals, ...], now: tuple[GroupTotals, ...]) -> tuple[GroupTotals, ...]:
    if not now or len(before) != len(now):  # groups appeared (a new salt) or changed: count from here on
        return ()
    if any(
        n.requests < b.requests or n.bad < b.bad or n.canary_requests < b.canary_requests
        for b, n in zip(before, now, strict=True)
    ):
        return now  # the router restarted
    return tuple(
        GroupTotals(n.requests - b.requests, n.bad - b.bad, n.canary_requests - b.canary_requests, n.customers)
        for b, n in zip(before, now, strict=True)
    )


def _slow_deltas(before: tuple[SlowTotals, ...], now: tuple[SlowTotals, ...]) -> tuple[SlowTotals, ...]:
    if not now or [b.le_ms for b in before] != [n.le_ms for n in now]:
        return ()
    if any(n.canary < b.canary or n.stable < b.stable for b, n in zip(before, now, strict=True)):
        return now
    return tuple(
        SlowTotals(n.le_ms, n.canary - b.canary, n.stable - b.stable) for b, n in zip(before, now, strict=True)
    )
