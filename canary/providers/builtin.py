"""The builtin metric provider: the router's own counters, and the queue consumers' own metrics.

- ``errors``: requests and errors (5xx, resets, timeouts) per track, from ``/_router/stats``, and
  per sticky bucket group when the router counts them for the query's salt and boundaries;
- ``latency``: requests, and requests slower than the threshold, from the router's latency buckets
  (the first bucket boundary at or above the threshold: it never calls a fast request slow), and
  requests slower than every bucket boundary (the whole histogram);
- ``mirror``: mirrored comparisons and differences: the canary's answers against stable's on the
  canary side, a baseline's against stable's (the noise) on the stable side (none without a baseline);
- ``conservation``: per consumer release, messages acknowledged, and acknowledged but in none of
  the counters that account for them, from each consumer process's metrics (which consumer, and
  its counters' names, are catalog data: :class:`ConservationCounters` per service).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from canary.providers.base import (
    ConservationCounters,
    Counts,
    GroupTotals,
    MetricQuery,
    ProviderUnavailable,
    SlowTotals,
    TrackCounts,
    conservation_of,
)
from canary.router.stats import BUCKETS, slow_bucket
from core.http_client import LoopClient


class BuiltinProvider:
    """``consumer_url(consumer, release)`` is where that consumer's process of the release answers
    (None: none runs); ``conservation`` maps a service to its consumer's counters."""

    def __init__(
        self,
        router_url: str,
        consumer_url: Callable[[str, str], str | None] | None = None,
        conservation: Mapping[str, ConservationCounters] | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.router_url = router_url.rstrip("/")
        self.consumer_url = consumer_url or (lambda consumer, release: None)
        self.conservation = dict(conservation or {})
        self.timeout_s = timeout_s
        self.http = LoopClient()  # kept alive: a tick makes one query per metric

    async def _get(self, client: httpx.AsyncClient, url: str) -> httpx.Response:
        try:
            r = await client.get(url, timeout=self.timeout_s)
            r.raise_for_status()
            return r
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None

    async def cumulative(self, query: MetricQuery) -> TrackCounts:
        client = self.http.get()
        if query.kind == "conservation":
            return await self._conservation(client, query)
        snapshot: dict[str, Any] = (await self._get(client, f"{self.router_url}/_router/stats")).json()
        if query.kind == "errors":
            return _errors(snapshot, query)
        if query.kind == "latency":
            return _latency(snapshot, query)
        if query.kind == "mirror":
            return _mirror(snapshot, query)
        raise ProviderUnavailable(f"the builtin provider has no metric of kind {query.kind!r}")

    async def _conservation(self, client: httpx.AsyncClient, query: MetricQuery) -> TrackCounts:
        source = conservation_of(self.conservation, query.service)
        counts = {}
        for track, release in (("canary", query.canary_release), ("stable", query.stable_release)):
            url = self.consumer_url(source.consumer, release)
            if not url and track == "canary" and query.canary_optional:
                counts[track] = Counts()  # no old release kept warm during the watch: nothing served
                continue
            if not url:
                raise ProviderUnavailable(f"no {source.consumer} runs release {release} ({track})")
            text = (await self._get(client, f"{url.rstrip('/')}{source.metrics_path}")).text
            totals = dict.fromkeys(source.names, 0.0)
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in totals and sample.labels.get("release") == release:
                        totals[sample.name] += sample.value
            acknowledged = int(totals[source.acknowledged])
            accounted = sum(int(totals[n]) for n in source.accounted)
            counts[track] = Counts(acknowledged, max(0, acknowledged - accounted))
        return TrackCounts(counts["canary"], counts["stable"])


def _errors(snapshot: dict[str, Any], q: MetricQuery) -> TrackCounts:
    def track(name: str, release: str) -> Counts:
        rows = [
            r
            for r in snapshot.get("counters", [])
            if r["service"] == q.service and r["track"] == name and r["release"] == release
        ]
        return Counts(sum(r["requests"] for r in rows), sum(r["errors"] for r in rows))

    return TrackCounts(track("canary", q.canary_release), track("stable", q.stable_release), _groups(snapshot, q))


def _mirror(snapshot: dict[str, Any], q: MetricQuery) -> TrackCounts:
    rows = [m for m in snapshot.get("mirror", []) if m["service"] == q.service]

    def side(compared: str, different: str) -> Counts:  # (a router from before baselines counts none)
        return Counts(sum(m.get(compared, 0) for m in rows), sum(m.get(different, 0) for m in rows))

    return TrackCounts(side("compared", "different"), side("baseline_compared", "baseline_different"))


def _groups(snapshot: dict[str, Any], q: MetricQuery) -> tuple[GroupTotals, ...]:
    """The router's per-bucket-group counts for the rollout's salt and boundaries (else none)."""
    if not q.sticky_groups:
        return ()
    for row in snapshot.get("sticky_groups", []):
        if row["service"] == q.service and row["salt"] == q.sticky_salt and tuple(row["boundaries"]) == q.sticky_groups:
            return tuple(
                GroupTotals(int(g["requests"]), int(g["errors"]), int(g["canary_requests"]), int(g.get("customers", 0)))
                for g in row["groups"]
            )
    return ()


def _latency(snapshot: dict[str, Any], q: MetricQuery) -> TrackCounts:
    if q.threshold_ms is None:
        raise ProviderUnavailable("a latency metric needs threshold_ms")
    fast_bucket = slow_bucket(q.threshold_ms / 1000)
    labels = [str(b) for b in BUCKETS]

    def track(name: str, release: str) -> tuple[Counts, list[int]]:
        events = bad = 0
        slower = [0] * len(labels)
        for row in snapshot.get("latency", []):
            if (row["service"], row["track"], row["release"]) != (q.service, name, release):
                continue
            buckets = row["buckets"]
            total = int(buckets["+Inf"])
            fast = int(buckets[fast_bucket])
            events += total
            bad += total - fast
            for i, label in enumerate(labels):
                slower[i] += total - int(buckets[label])
        return Counts(events, bad), slower

    (canary, c_slow), (stable, s_slow) = track("canary", q.canary_release), track("stable", q.stable_release)
    # the whole histogram: requests slower than each boundary, for the judge's distribution test
    slower = tuple(SlowTotals(b * 1000, c, s) for b, c, s in zip(BUCKETS, c_slow, s_slow, strict=True))
    return TrackCounts(canary, stable, slower=slower)
