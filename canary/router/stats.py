"""The router's per-track counts, kept once and shown twice: Prometheus metrics and a JSON snapshot.

Per service, track, release and route template: requests, errors (5xx answers, connection
failures, timeouts), failovers, requests that could not fail over because their body was over the
failover budget (``unbuffered``), latency; per route, mirrored comparisons and differences (the
canary's answers against stable's, and the baseline's: the noise); and,
for a service whose table asks for sticky bucket groups (``sticky.groups``), requests, errors and
canary-served requests per group of the rollout's salted hash space (the judge's sticky test), and
the distinct customers seen per group (a level, up to ``CUSTOMERS_TRACKED`` customers: the
judge's sample-ratio check on customers, ``canary.analysis.customers``).
Route labels are bounded: a service's route templates configured in the table (``routes``,
``mirror.safe_routes``) are always its own labels, and up to ``ROUTES_PER_SERVICE`` others, as
they first come (paths whose ids ``canary.router.split.route_template`` did not fold: probes,
typos); any further one is counted as ``OTHER_ROUTE``, so no consumer can grow the counters, the
snapshot or /metrics without end.  The judge's metrics sum over routes, so folding changes none.
Counting is a dict increment on the hot path; the Prometheus collector reads the dicts when
scraped.  The snapshot is cumulative, for the builtin metric provider to take differences of.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from core.routes import Sticky

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Key = tuple[str, str, str, str]  # service, track, release, route
# per service and rollout: beyond this many customers the count stops (about 5 MB of hashes; the
# customers counted are still the first ones to arrive, a fair sample of the hash)
CUSTOMERS_TRACKED = 100_000
ROUTES_PER_SERVICE = 100  # route labels per service besides the configured ones (label sets: x tracks, releases)
OTHER_ROUTE = "other"  # the label of any route past those (no template is one: they begin with "/")


def slow_bucket(threshold_s: float) -> str:
    """The label of the first latency bucket at or above ``threshold_s`` ("+Inf" past the last): what
    it counts is fast, the rest is slow, so a fast request is never called slow.  Buckets are
    labelled ``str(bound)``, in the snapshot and on /metrics alike."""
    at = next((b for b in BUCKETS if b >= threshold_s), None)
    return str(at) if at is not None else "+Inf"


@dataclass
class StickyGroupCounts:
    salt: str
    boundaries: tuple[int, ...]
    # per group, the reference last: [requests, errors, canary-served, distinct customers]
    counts: list[list[int]] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)  # the customers' keys, hashed (this process's hash)

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [[0, 0, 0, 0] for _ in range(len(self.boundaries) + 1)]

    def saw(self, key: str, group: int) -> None:
        """A request of the customer ``key`` (in bucket group ``group``) arrived."""
        h = hash(key)
        if h not in self.seen and len(self.seen) < CUSTOMERS_TRACKED:
            self.seen.add(h)
            self.counts[group][3] += 1


class RouterStats(Collector):
    def __init__(self) -> None:
        self.requests: dict[Key, int] = defaultdict(int)
        self.errors: dict[Key, int] = defaultdict(int)
        self.failovers: dict[Key, int] = defaultdict(int)
        # safe to repeat, but sent without failover: the body did not fit the failover budget
        self.unbuffered_sends: dict[Key, int] = defaultdict(int)
        self.latency: dict[tuple[str, str, str], list[float]] = {}  # bucket counts..., then sum
        self._latency_of: dict[Key, list[float]] = {}  # each counter key's row of ``latency``
        self.mirror_compared: dict[tuple[str, str], int] = defaultdict(int)
        self.mirror_different: dict[tuple[str, str], int] = defaultdict(int)
        self.baseline_compared: dict[tuple[str, str], int] = defaultdict(int)  # stable vs its baseline
        self.baseline_different: dict[tuple[str, str], int] = defaultdict(int)
        self.mirror_skipped: dict[tuple[str, str], int] = defaultdict(int)  # not sent: too many in flight
        # per service, for the salt and boundaries of its current table: per bucket group
        # [requests, errors, canary-served]; a new salt (a new rollout) starts them afresh
        self.groups: dict[str, StickyGroupCounts] = {}
        self.routes: dict[str, set[str]] = {}  # per service, the unconfigured route labels admitted
        self.started = time.time()

    def route_label(self, service: str, template: str, configured: Collection[str]) -> str:
        """The label a request of route ``template`` is counted under: the template itself when the
        table configures it (``configured``) or it is one of the service's first ``ROUTES_PER_SERVICE``
        others, else ``OTHER_ROUTE``.  Once per path per table (``canary.router.route_plan``)."""
        if template in configured:
            return template
        seen = self.routes.get(service)
        if seen is None:
            seen = self.routes[service] = set()
        if template in seen:
            return template
        if len(seen) >= ROUTES_PER_SERVICE:
            return OTHER_ROUTE
        seen.add(template)
        return template

    def record(self, key: Key, error: bool, seconds: float) -> None:
        self.requests[key] += 1
        if error:
            self.errors[key] += 1
        lat = self._latency_of.get(key)
        if lat is None:
            lat = self.latency.get(key[:3])
            if lat is None:
                lat = self.latency[key[:3]] = [0.0] * (len(BUCKETS) + 2)
            self._latency_of[key] = lat
        lat[bisect.bisect_left(BUCKETS, seconds)] += 1
        lat[-1] += seconds

    def group_counts(self, service: str, sticky: Sticky) -> StickyGroupCounts:
        """The service's counts for the salt and boundaries of ``sticky`` (afresh for new ones)."""
        g = self.groups.get(service)
        if g is None or g.salt != sticky.salt or g.boundaries != sticky.groups:
            g = self.groups[service] = StickyGroupCounts(sticky.salt, sticky.groups)
        return g

    def record_group(self, service: str, sticky: Sticky, group: int, error: bool, on_canary: bool) -> None:
        row = self.group_counts(service, sticky).counts[group]
        row[0] += 1
        if error:
            row[1] += 1
        if on_canary:
            row[2] += 1

    def failover(self, key: Key) -> None:
        self.failovers[key] += 1

    def unbuffered(self, key: Key) -> None:
        """A request safe to repeat sent without failover: its body did not fit the failover budget."""
        self.unbuffered_sends[key] += 1

    def mirrored(
        self, service: str, route: str, different: bool, track: Literal["canary", "baseline"] = "canary"
    ) -> None:
        """One mirrored answer compared with stable's: the canary's, or the baseline's (the noise)."""
        compared, differ = (
            (self.baseline_compared, self.baseline_different)
            if track == "baseline"
            else (self.mirror_compared, self.mirror_different)
        )
        compared[(service, route)] += 1
        if different:
            differ[(service, route)] += 1

    def snapshot(self) -> dict[str, Any]:
        rows = [
            {
                "service": k[0],
                "track": k[1],
                "release": k[2],
                "route": k[3],
                "requests": n,
                "errors": self.errors.get(k, 0),
                "failovers": self.failovers.get(k, 0),
                "unbuffered": self.unbuffered_sends.get(k, 0),
            }
            for k, n in sorted(self.requests.items())
        ]
        latency = [
            {
                "service": k[0],
                "track": k[1],
                "release": k[2],
                "buckets": dict(zip([*map(str, BUCKETS), "+Inf"], _cumulative(v[:-1]), strict=True)),
                "sum": v[-1],
            }
            for k, v in sorted(self.latency.items())
        ]
        mirror = [
            {
                "service": k[0],
                "route": k[1],
                "compared": self.mirror_compared.get(k, 0),
                "different": self.mirror_different.get(k, 0),
                "baseline_compared": self.baseline_compared.get(k, 0),
                "baseline_different": self.baseline_different.get(k, 0),
                "skipped": self.mirror_skipped.get(k, 0),
            }
            for k in sorted({*self.mirror_compared, *self.baseline_compared, *self.mirror_skipped})
        ]
        groups = [
            {
                "service": service,
                "salt": g.salt,
                "boundaries": list(g.boundaries),
                "groups": [
                    {"requests": r[0], "errors": r[1], "canary_requests": r[2], "customers": r[3]} for r in g.counts
                ],
            }
            for service, g in sorted(self.groups.items())
        ]
        return {"since": self.started, "counters": rows, "latency": latency, "mirror": mirror, "sticky_groups": groups}

    def collect(self) -> Iterator[Any]:
        labels = ["service", "track", "release", "route"]
        for name, doc, data in (
            ("router_requests_total", "Requests answered, by the track that served them.", self.requests),
            ("router_errors_total", "5xx answers, connection failures and timeouts, by track.", self.errors),
            ("router_failovers_total", "Canary failures re-sent to stable.", self.failovers),
            (
                "router_failover_unbuffered_total",
                "Requests safe to repeat sent without failover: their body did not fit the failover budget.",
                self.unbuffered_sends,
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, value in data.items():
                family.add_metric(list(key), value)
            yield family
        hist = HistogramMetricFamily(
            "router_request_duration_seconds", "Latency by track.", labels=["service", "track", "release"]
        )
        for lkey, v in self.latency.items():
            cumulative = _cumulative(v[:-1])
            hist.add_metric(list(lkey), list(zip([*map(str, BUCKETS), "+Inf"], cumulative, strict=True)), v[-1])
        yield hist
        for name, doc, column in (
            ("router_sticky_group_requests_total", "Requests per sticky bucket group, whatever track served them.", 0),
            ("router_sticky_group_errors_total", "Errors per sticky bucket group, whatever track served them.", 1),
            ("router_sticky_group_canary_requests_total", "Requests per sticky bucket group served by the canary.", 2),
        ):
            # the salt and boundaries say which rollout's groups these are (as the snapshot does), so
            # that a metrics source never gives one rollout another's counts; group: an index, bounded
            gfam = CounterMetricFamily(name, doc, labels=["service", "salt", "boundaries", "group"])
            for service, g in self.groups.items():
                bounds = ",".join(map(str, g.boundaries))
                for index, row in enumerate(g.counts):
                    gfam.add_metric([service, g.salt, bounds, str(index)], row[column])
            yield gfam
        customers = GaugeMetricFamily(
            "router_sticky_group_customers",
            "Distinct customers seen per sticky bucket group since the rollout's salt (capped).",
            labels=["service", "salt", "boundaries", "group"],
        )
        for service, g in self.groups.items():
            bounds = ",".join(map(str, g.boundaries))
            for index, row in enumerate(g.counts):
                customers.add_metric([service, g.salt, bounds, str(index)], row[3])
        yield customers
        for name, doc, mdata in (
            ("router_mirror_compared_total", "Mirrored answers compared (canary vs stable).", self.mirror_compared),
            ("router_mirror_different_total", "Mirrored answers that differ.", self.mirror_different),
            (
                "router_mirror_baseline_compared_total",
                "Baseline answers compared with stable's (the noise the canary is judged against).",
                self.baseline_compared,
            ),
            ("router_mirror_baseline_different_total", "Baseline answers that differ.", self.baseline_different),
            (
                "router_mirror_skipped_total",
                "Requests chosen for mirroring but not mirrored: the comparisons in flight were at their bound.",
                self.mirror_skipped,
            ),
        ):
            fam = CounterMetricFamily(name, doc, labels=["service", "route"])
            for mkey, value in mdata.items():
                fam.add_metric(list(mkey), value)
            yield fam


def _cumulative(counts: list[float]) -> list[float]:
    out, total = [], 0.0
    for c in counts:
        total += c
        out.append(total)
    return out
