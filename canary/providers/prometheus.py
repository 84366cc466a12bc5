"""The Prometheus metric provider: the same counts per track as the builtin one, read from Prometheus.

Each metric is a pair of PromQL templates per track, events and bad events, with ``$service``,
``$track``, ``$release`` and ``$window`` filled in (``string.Template``: PromQL's braces stay
literal).  The built-in templates read the counters the router and the opens processors already
expose; a ``query`` metric brings its own (``events_query`` and ``bad_query`` in the spec).

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
zero (a counter appears with its first event).

prometheus-api-client is synchronous: every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from string import Template

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from canary.providers.base import Counts, MetricQuery, ProviderUnavailable, TrackCounts
from canary.router.stats import slow_bucket

_SEL = '{service="$service",track="$track",release="$release"}'
# kind -> (events, bad) templates, per track
BUILTIN: dict[str, tuple[str, str]] = {
    "errors": (f"router_requests_total{_SEL}", f"router_errors_total{_SEL}"),
    "latency": (
        f"router_request_duration_seconds_count{_SEL}",
        f"router_request_duration_seconds_count{_SEL}"
        f' - ignoring(le) router_request_duration_seconds_bucket{_SEL[:-1]},le="$le"}}',
    ),
    "mirror": (
        'sum(router_mirror_compared_total{service="$service"})',
        'sum(router_mirror_different_total{service="$service"})',
    ),
    "conservation": (
        'sum(opens_events_acknowledged_total{release="$release"})',
        'sum(opens_events_acknowledged_total{release="$release"})'
        ' - (sum(opens_recorded_total{release="$release"}) or vector(0))'
        ' - (sum(opens_events_filtered_total{release="$release"}) or vector(0))',
    ),
}
CANARY_ONLY = frozenset({"mirror"})  # mirrored comparisons count against the canary; stable has none


@dataclass
class _Reading:
    """What one filled template has shown so far: its running total, and how it got there."""

    total: float = 0.0
    series: dict[str, float] = field(default_factory=dict)  # counter mode: last value per series
    at: float | None = None  # the end of the last bin read
    first_try: float | None = None  # when it was first asked for
    seen_series: bool = False


class PrometheusProvider:
    def __init__(
        self, url: str, *, scrape_interval_s: float = 15.0, delay_s: float = 0.0, timeout_s: float = 5.0
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.delay_s = delay_s or scrape_interval_s + 1.0
        # a track's events may have no series until its first request is scraped; past this, say so
        self.no_series_grace_s = max(10.0, 3 * self.delay_s)
        # no retries: a tick that finds Prometheus down holds, and the next tick asks again
        self.client = PrometheusConnect(self.url, retry=Retry(total=0), timeout=timeout_s)
        self.readings: dict[str, _Reading] = {}

    async def cumulative(self, query: MetricQuery) -> TrackCounts:
        events_t, bad_t = _templates(query)
        at = time.time() - self.delay_s
        tracks = [("canary", query.canary_release), ("stable", query.stable_release)]
        if query.kind in CANARY_ONLY:
            tracks = tracks[:1]
        counts = {}
        for track, release in tracks:
            values = {"service": query.service, "track": track, "release": release, "le": _bucket(query)}
            events = await self._read(events_t, values, at, required=True)
            bad = await self._read(bad_t, values, at, required=False)
            counts[track] = Counts(events, min(bad, events))
        return TrackCounts(counts["canary"], counts.get("stable", Counts()))

    async def _read(self, template: str, values: dict[str, str], at: float, required: bool) -> int:
        key = Template(template).safe_substitute(values)
        reading = self.readings.setdefault(key, _Reading())
        first = reading.first_try is None
        started = reading.first_try = at if reading.first_try is None else reading.first_try
        if "$window" in key:  # increase mode: the first call only marks where the first bin starts
            if reading.at is None:
                reading.at = at
            if first or at - reading.at < 0.5:
                return round(reading.total)
            series = await self._query(Template(key).substitute(window=f"{round((at - reading.at) * 1000)}ms"), at)
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
        if "$window" in key:
            reading.total += sum(series.values())
        else:  # counter mode: series present at the first call are the baseline; later ones are new
            for name, value in series.items():
                before = reading.series.get(name)
                if before is not None:
                    reading.total += value if value < before else value - before
                elif not first:
                    reading.total += value
                reading.series[name] = value
        reading.at = at
        return round(reading.total)

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


def _templates(query: MetricQuery) -> tuple[str, str]:
    if query.kind == "query":
        if not (query.events_query and query.bad_query):
            raise ProviderUnavailable("a query metric needs events_query and bad_query")
        return query.events_query, query.bad_query
    if query.kind not in BUILTIN:
        raise ProviderUnavailable(f"the Prometheus provider has no metric of kind {query.kind!r}")
    return BUILTIN[query.kind]


def _bucket(query: MetricQuery) -> str:
    """The router's latency bucket at or above the threshold (a fast request is never called slow)."""
    if query.kind != "latency":
        return ""
    if query.threshold_ms is None:
        raise ProviderUnavailable("a latency metric needs threshold_ms")
    return slow_bucket(query.threshold_ms / 1000)


def _server_error(exc: PrometheusApiClientException) -> str:
    text = str(exc)
    start = text.find("{")
    try:
        body = json.loads(text[start : text.rfind("}") + 1].encode().decode("unicode_escape"))
        return f"{body.get('errorType', 'error')}: {body.get('error', '')}"
    except (ValueError, AttributeError):
        return text
