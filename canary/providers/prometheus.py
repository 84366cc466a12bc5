"""The Prometheus metric provider: the same counts per track as the builtin one, read from Prometheus.

Each metric is a pair of PromQL templates per track, events and bad events, with ``$service``,
``$track``, ``$release`` and ``$window`` filled in (``canary.providers.promql``).  The built-in
templates read the counters the router exposes: requests and errors per track, the latency
histogram (every bucket, so the judge also gets the whole distribution), mirrored comparisons (the
canary's, and a baseline's on the stable side), and,
under sticky routing, the per bucket-group counts of the rollout's salt (the judge's group test);
a ``conservation`` metric reads the counters its service's queue consumer names in the catalog
(``conservation`` when the provider is made); a ``query`` metric brings its own templates
(``events_query`` and ``bad_query`` in the spec).

Two ways to read a template, chosen by whether it names ``$window``:

- a **counter** template (no ``$window``, e.g. ``router_errors_total{...}``) is read as it stands at
  each bin's end, series by series, and the provider adds up the increases itself (a series that
  went down restarted: its new value is its increase).  No extrapolation: the judge sees exactly
  the counts the builtin provider would;
- an **increase** template (``sum(increase(x{...}[$window]))``) is evaluated at each bin's end with
  the bin's length as the window; its (rounded) results are added up.

A bin is judged once Prometheus has it: queries are evaluated at ``now - delay``, where the delay
covers a scrape interval and the scrape itself (and, for recorded series, the rule evaluation
interval: raise ``delay_s``).  Prometheus down, slow, refusing a query, or having no series for a
track's events raises :class:`ProviderUnavailable` with the reason (and the query): the rollout
holds; it never rolls back and never promotes on a missing answer.  Bad events with no series are
zero (a counter appears with its first event); bucket groups with no series for the rollout's salt
are not counted yet (the judge then uses its per-request test, as with the builtin provider).

prometheus-api-client is synchronous: every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from canary.providers import promql
from canary.providers.base import (
    ConservationCounters,
    Counts,
    GroupTotals,
    MetricQuery,
    ProviderUnavailable,
    SlowTotals,
    TrackCounts,
)
from canary.router.stats import BUCKETS, slow_bucket


@dataclass
class _Reading:
    """What one filled template has shown so far: each series' increase, and how it got there."""

    increase: dict[str, float] = field(default_factory=dict)  # per series (increase mode: one, "")
    last: dict[str, float] = field(default_factory=dict)  # counter mode: last value per series
    at: float | None = None  # the end of the last bin read
    first_try: float | None = None  # when it was first asked for
    seen_series: bool = False


class PrometheusProvider:
    def __init__(
        self,
        url: str,
        *,
        scrape_interval_s: float = 15.0,
        delay_s: float = 0.0,
        timeout_s: float = 5.0,
        conservation: Mapping[str, ConservationCounters] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.delay_s = delay_s or scrape_interval_s + 1.0
        # a track's events may have no series until its first request is scraped; past this, say so
        self.no_series_grace_s = max(10.0, 3 * self.delay_s)
        # no retries: a tick that finds Prometheus down holds, and the next tick asks again
        self.client = PrometheusConnect(self.url, retry=Retry(total=0), timeout=timeout_s)
        self.conservation = dict(conservation or {})  # service -> its consumer's counters (catalog)
        self.readings: dict[str, _Reading] = {}

    async def cumulative(self, query: MetricQuery) -> TrackCounts:
        at = time.time() - self.delay_s
        if query.kind == "latency":
            return await self._latency(query, at)
        if query.kind == "conservation":
            return await self._conservation(query, at)
        counts = {}
        for track, values in _tracks(query):
            events_t, bad_t = promql.query_templates(query, track)
            events = await self._total(events_t, values, at, required=_required(query, track))
            bad = await self._total(bad_t, values, at, required=False)
            counts[track] = Counts(events, min(bad, events))
        groups = await self._groups(query, at) if query.kind == "errors" else ()
        return TrackCounts(counts["canary"], counts["stable"], groups)

    async def _latency(self, query: MetricQuery, at: float) -> TrackCounts:
        """Requests and requests slower than the threshold, and slower than every boundary, from
        the router's buckets, exactly as the builtin provider counts them."""
        if query.threshold_ms is None:
            raise ProviderUnavailable("a latency metric needs threshold_ms")
        fast = float(slow_bucket(query.threshold_ms / 1000))
        counts, slower = {}, {}
        for track, values in _tracks(query):
            by_le = await self._by_label(promql.LATENCY_BUCKETS, values, at, "le", required=_required(query, track))
            below = {_bound(le): n for le, n in by_le.items()}
            events = below.get(math.inf, 0)
            missing = [b for b in (*BUCKETS, math.inf) if b not in below]
            if events and missing:
                raise ProviderUnavailable(
                    f"{promql.fill(promql.LATENCY_BUCKETS, values)} has no bucket le={missing[0]:g}: "
                    "not the router's latency histogram"
                )
            counts[track] = Counts(events, events - below.get(fast, 0))
            slower[track] = [events - below.get(b, 0) for b in BUCKETS]
        histogram = tuple(
            SlowTotals(b * 1000, c, s) for b, c, s in zip(BUCKETS, slower["canary"], slower["stable"], strict=True)
        )
        return TrackCounts(counts["canary"], counts["stable"], slower=histogram)

    async def _groups(self, query: MetricQuery, at: float) -> tuple[GroupTotals, ...]:
        """The router's per bucket-group counts for the rollout's salt and boundaries (else none)."""
        if not query.sticky_groups:
            return ()
        values = {
            "service": query.service,
            "salt": query.sticky_salt,
            "boundaries": ",".join(map(str, query.sticky_groups)),
        }
        columns = [await self._by_label(t, values, at, "group") for t in promql.STICKY_GROUPS]
        wanted = [str(i) for i in range(len(query.sticky_groups) + 1)]
        if any(sorted(c) != sorted(wanted) for c in columns):
            return ()  # not counted for this salt yet (or not by this router)
        requests, errors, on_canary = columns
        customers = await self._customers(values, at)
        return tuple(
            GroupTotals(requests[g], min(errors[g], requests[g]), on_canary[g], customers.get(g, 0)) for g in wanted
        )

    async def _customers(self, values: dict[str, str], at: float) -> dict[str, int]:
        """Per group, the distinct customers seen by the router that has seen the most: a gauge per
        router, never added up (a customer who reaches two routers is one customer)."""
        routers: dict[str, dict[str, int]] = {}
        for name, value in (await self._query(promql.fill(promql.STICKY_CUSTOMERS, values), at)).items():
            labels = json.loads(name) if name else {}
            group = str(labels.pop("group", ""))
            routers.setdefault(json.dumps(labels, sort_keys=True), {})[group] = round(value)
        return max(routers.values(), key=lambda counts: sum(counts.values()), default={})

    async def _conservation(self, query: MetricQuery, at: float) -> TrackCounts:
        counters = promql.conservation(self.conservation, query.service)
        counts = {}
        for track, values in _tracks(query):
            acknowledged = await self._total(counters.acknowledged, values, at, required=_required(query, track))
            accounted = 0
            for template in counters.accounted:
                accounted += await self._total(template, values, at, required=False)
            counts[track] = Counts(acknowledged, min(acknowledged, max(0, acknowledged - accounted)))
        return TrackCounts(counts["canary"], counts["stable"])

    async def _total(self, template: str, values: dict[str, str], at: float, required: bool) -> int:
        return round(sum((await self._series(template, values, at, required)).values()))

    async def _by_label(
        self, template: str, values: dict[str, str], at: float, label: str, required: bool = False
    ) -> dict[str, int]:
        """The series' increases added up per value of ``label`` (one series per router, say)."""
        out: dict[str, float] = {}
        for name, increase in (await self._series(template, values, at, required)).items():
            value = json.loads(name).get(label, "") if name else ""
            out[value] = out.get(value, 0.0) + increase
        return {k: round(v) for k, v in out.items()}

    async def _series(self, template: str, values: dict[str, str], at: float, required: bool) -> dict[str, float]:
        """Each series' increase since the template was first read (increase mode: one, "")."""
        key = promql.fill(template, values)
        reading = self.readings.setdefault(key, _Reading())
        first = reading.first_try is None
        started = reading.first_try = at if reading.first_try is None else reading.first_try
        increase_mode = promql.is_increase(template)
        if increase_mode:  # the first call only marks where the first bin starts
            if reading.at is None:
                reading.at = at
            if first or at - reading.at < 0.5:
                return dict(reading.increase)
            series = await self._query(promql.with_window(key, at - reading.at), at)
        else:
            series = await self._query(key, at)
        if not series and required:
            if reading.seen_series:
                raise ProviderUnavailable(f"Prometheus has no series any more for {key}")
            if at - started > self.no_series_grace_s:
                raise ProviderUnavailable(
                    f"Prometheus has had no series for {key} in {at - started:.0f} s: "
                    "check the query and that Prometheus scrapes the targets"
                )
        reading.seen_series = reading.seen_series or bool(series)
        if increase_mode:
            reading.increase[""] = reading.increase.get("", 0.0) + sum(series.values())
        else:  # counter mode: series present at the first call are the baseline; later ones are new
            for name, value in series.items():
                before = reading.last.get(name)
                new_series = 0.0 if first else value
                step = new_series if before is None else value if value < before else value - before  # down: restarted
                reading.increase[name] = reading.increase.get(name, 0.0) + step
                reading.last[name] = value
        reading.at = at
        return dict(reading.increase)

    async def _query(self, promql: str, at: float) -> dict[str, float]:
        try:
            result = await asyncio.to_thread(self.client.custom_query, promql, {"time": f"{at:.3f}"})
        except PrometheusApiClientException as exc:
            raise ProviderUnavailable(f"Prometheus refused {promql}: {_server_error(exc)}") from None
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"Prometheus at {self.url} did not answer {self._why(exc)}") from None
        out = {}
        for item in result:
            value = float(item["value"][1])
            if math.isfinite(value):
                out[json.dumps(item.get("metric", {}), sort_keys=True)] = value
        return out

    def _why(self, exc: requests.RequestException) -> str:
        """In words: requests reports a read timeout without retries as a ConnectionError."""
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        name = type(reason or exc).__name__
        if "Timeout" in name:
            return f"within {self.timeout_s:g} s"
        if "NewConnectionError" in name or "refused" in str(reason or exc).lower():
            return "(connection refused)"
        return f"({name})"


def _bound(le: str) -> float:
    """A bucket's upper bound ("0.25", "+Inf"; Prometheus 3 writes "1" for "1.0"); NaN if none."""
    try:
        return float(le)
    except ValueError:
        return math.nan


def _required(query: MetricQuery, track: str) -> bool:
    """A track's events must have a series (past the grace), but an optional canary track's and
    the mirror's baseline side (no baseline: nothing compared)."""
    if track == "stable":
        return query.kind not in promql.OPTIONAL_STABLE
    return not query.canary_optional


def _tracks(query: MetricQuery) -> list[tuple[str, dict[str, str]]]:
    """Each track the query's kind counts, with the values its templates are filled with."""
    tracks = [("canary", query.canary_release), ("stable", query.stable_release)]
    return [(track, {"service": query.service, "track": track, "release": release}) for track, release in tracks]


def _server_error(exc: PrometheusApiClientException) -> str:
    text = str(exc)
    start = text.find("{")
    try:
        body = json.loads(text[start : text.rfind("}") + 1].encode().decode("unicode_escape"))
        return f"{body.get('errorType', 'error')}: {body.get('error', '')}"
    except (ValueError, AttributeError):
        return text
